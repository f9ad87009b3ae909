import Foundation
import GRDB

/// The embedded store: one SQLite file (WAL), surviving restarts.
public final class SQLiteStore: ResourceStore {
    private let db: DatabaseQueue
    private let notifier = RevisionNotifier()
    /// Changes kept for watchers; older ones are compacted away.
    private let retainedChanges: Int64

    public init(path: String, retainedChanges: Int64 = 100_000) throws {
        var config = Configuration()
        config.busyMode = .timeout(5)
        // WAL: a commit appends to the log instead of rewriting pages through a
        // rollback journal (measured here: 2 ms instead of 10 ms a commit, which
        // at 1,000 agents each reporting after every change is the difference
        // between 2 and 10 seconds of commits per change).
        config.journalMode = .wal
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            // GRDB pairs WAL with synchronous=NORMAL; FULL keeps every acknowledged
            // commit through a power loss, as the rollback journal did.
            try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
        } catch {
            throw StoreError(code: .storage, message: "cannot open the SQLite store at \(path): \(error) (does its folder exist, and is it writable?)")
        }
        self.retainedChanges = retainedChanges
        try Self.migrator.migrate(db)
        let rev = try db.read { try Self.currentRevision($0) }
        notifier.publish(rev)
    }

    private static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                INSERT INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0);
                CREATE TABLE resources (
                    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                    body TEXT NOT NULL,
                    resource_version INTEGER NOT NULL, generation INTEGER NOT NULL, created_revision INTEGER NOT NULL,
                    PRIMARY KEY (kind, namespace, name));
                CREATE TABLE changes (
                    revision INTEGER NOT NULL, seq INTEGER NOT NULL,
                    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, op TEXT NOT NULL,
                    PRIMARY KEY (revision, seq));
                """)
        }
        return m
    }

    private static func currentRevision(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'revision'") ?? 0
    }

    private static func row(_ r: Row) -> StoredResource {
        StoredResource(
            key: ResourceKey(kind: r["kind"], namespace: r["namespace"], name: r["name"]),
            body: r["body"], resourceVersion: r["resource_version"], generation: r["generation"],
            createdRevision: r["created_revision"])
    }

    public func get(_ key: ResourceKey) async throws -> StoredResource? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
                             arguments: [key.kind, key.namespace, key.name]).map(Self.row)
        }
    }

    public func list(kind: String?, namespace: String?) async throws -> [StoredResource] {
        try await db.read { db in
            var sql = "SELECT * FROM resources WHERE 1 = 1"
            var args: [any DatabaseValueConvertible] = []
            if let kind { sql += " AND kind = ?"; args.append(kind) }
            if let namespace { sql += " AND namespace = ?"; args.append(namespace) }
            sql += " ORDER BY kind, namespace, name"
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).map(Self.row)
        }
    }

    /// One query for every kind asked.
    public func list(kinds: [String]) async throws -> [StoredResource] {
        guard !kinds.isEmpty else { return [] }
        return try await db.read { db in
            let marks = Array(repeating: "?", count: kinds.count).joined(separator: ", ")
            return try Row.fetchAll(db, sql: "SELECT * FROM resources WHERE kind IN (\(marks)) ORDER BY kind, namespace, name",
                                    arguments: StatementArguments(kinds)).map(Self.row)
        }
    }

    @discardableResult
    public func commit(_ mutations: [Mutation]) async throws -> CommitResult {
        let retained = retainedChanges
        let result = try await db.write { db -> CommitResult in
            let rev = try Self.currentRevision(db) + 1
            var written: [StoredResource] = []
            for (seq, m) in mutations.enumerated() {
                let k = m.key
                let existing = try Row.fetchOne(db, sql: "SELECT * FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
                                                arguments: [k.kind, k.namespace, k.name]).map(Self.row)
                if let expected = m.expectedVersion {
                    let actual = existing?.resourceVersion
                    if expected == 0 ? actual != nil : actual != expected {
                        throw StoreError.conflict(k, expected: expected, actual: actual)
                    }
                }
                switch m.operation {
                case .put(let body, let bump):
                    let generation = (existing?.generation ?? 0) + ((bump || existing == nil) ? 1 : 0)
                    let created = existing?.createdRevision ?? rev
                    try db.execute(sql: """
                        INSERT INTO resources (kind, namespace, name, body, resource_version, generation, created_revision)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (kind, namespace, name) DO UPDATE SET
                          body = excluded.body, resource_version = excluded.resource_version, generation = excluded.generation
                        """, arguments: [k.kind, k.namespace, k.name, body, rev, generation, created])
                    written.append(StoredResource(key: k, body: body, resourceVersion: rev, generation: generation, createdRevision: created))
                    try db.execute(sql: "INSERT INTO changes VALUES (?, ?, ?, ?, ?, 'put')",
                                   arguments: [rev, seq, k.kind, k.namespace, k.name])
                case .delete:
                    guard existing != nil else {
                        throw StoreError(code: .notFound, message: "\(k) does not exist")
                    }
                    try db.execute(sql: "DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?",
                                   arguments: [k.kind, k.namespace, k.name])
                    try db.execute(sql: "INSERT INTO changes VALUES (?, ?, ?, ?, ?, 'delete')",
                                   arguments: [rev, seq, k.kind, k.namespace, k.name])
                }
            }
            try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'revision'", arguments: [rev])
            if rev > retained {
                try db.execute(sql: "DELETE FROM changes WHERE revision <= ?", arguments: [rev - retained])
                try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'compacted'", arguments: [rev - retained])
            }
            return CommitResult(revision: rev, written: written)
        }
        notifier.publish(result.revision)
        return result
    }

    public func revision() async throws -> Int64 {
        try await db.read { try Self.currentRevision($0) }
    }

    public func changes(after revision: Int64) async throws -> [Change] {
        try await db.read { db in
            let compacted = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'compacted'") ?? 0
            if revision < compacted {
                throw StoreError(code: .compacted, message: "changes before revision \(compacted) were compacted; list again")
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM changes WHERE revision > ? ORDER BY revision, seq", arguments: [revision]).map { r in
                Change(revision: r["revision"], key: ResourceKey(kind: r["kind"], namespace: r["namespace"], name: r["name"]),
                       kind: Change.Kind(rawValue: r["op"]) ?? .put)
            }
        }
    }

    public func waitForRevision(above revision: Int64, timeout: Duration) async throws -> Int64 {
        await notifier.wait(above: revision, timeout: timeout)
    }
}
