import Foundation
import Testing
import WeftControlClient
import WeftCore

@Suite("Client: tables")
struct ClientTableTests {
    static let now = Date(timeIntervalSince1970: 1_750_000_000)
    static func ago(_ seconds: TimeInterval) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: now.addingTimeInterval(-seconds))
    }

    @Test("columns are as wide as their widest cell, three spaces apart, without trailing spaces")
    func textTableAligns() {
        let table = TextTable(header: ["NAME", "AGE"], rows: [["a-long-name", "5m"], ["b", "12d"]])
        #expect(table.render() == """
        NAME          AGE
        a-long-name   5m
        b             12d

        """)
    }

    @Test("a workload table has NAME, NODE, UNIT/CGROUP, PORTS and AGE; NAMESPACE only across namespaces")
    func workloadTable() {
        let w: JSONValue = [
            "kind": "Workload",
            "metadata": ["name": "catalog-v1", "namespace": "shop", "creationTimestamp": .string(Self.ago(300))],
            "spec": ["node": "node-a", "unit": "catalog-v1.service",
                     "ports": [["name": "http", "port": 8080, "protocol": "http"], ["port": 9090, "protocol": "grpc"]]],
        ]
        let single = ResourceTable.render(kind: .workload, items: [w], showNamespace: false, now: Self.now)
        #expect(single == """
        NAME         NODE     UNIT/CGROUP          PORTS                 AGE
        catalog-v1   node-a   catalog-v1.service   8080/http,9090/grpc   5m

        """)
        let all = ResourceTable.render(kind: .workload, items: [w], showNamespace: true, now: Self.now)
        #expect(all.hasPrefix("NAMESPACE   NAME"))
        #expect(all.contains("shop        catalog-v1"))
    }

    @Test("listing several kinds qualifies names with the kind")
    func qualifiedNames() {
        let item: JSONValue = ["metadata": ["name": "catalog", "namespace": "shop"], "spec": [:]]
        let rows = ResourceTable.table(kind: .service, items: [item], showNamespace: false, qualifyNames: true, now: Self.now).rows
        #expect(rows.first?.first == "service/catalog")
    }

    @Test("-o wide adds detail columns after AGE; absent fields print <none>")
    func wideColumns() {
        let w: JSONValue = [
            "metadata": ["name": "db", "namespace": "shop"],
            "spec": ["node": "node-b", "cgroup": "custom/db", "serviceAccount": "db"],
        ]
        let text = ResourceTable.render(kind: .workload, items: [w], showNamespace: false, wide: true, now: Self.now)
        let lines = text.split(separator: "\n")
        #expect(lines[0].split(separator: " ", omittingEmptySubsequences: true) ==
            ["NAME", "NODE", "UNIT/CGROUP", "PORTS", "AGE", "SERVICE-ACCOUNT", "ADDRESSES", "NETNS", "LABELS"])
        #expect(lines[1].split(separator: " ", omittingEmptySubsequences: true) ==
            ["db", "node-b", "cgroup:custom/db", "<none>", "<unknown>", "db", "<none>", "<none>", "<none>"])
    }

    @Test("service ports show the target only when it differs")
    func servicePorts() {
        let s: JSONValue = [
            "metadata": ["name": "catalog", "namespace": "shop"],
            "spec": ["virtualIP": "10.96.0.10", "selector": ["app": "catalog"],
                     "ports": [["name": "http", "port": 80, "targetPort": 8080, "protocol": "http"],
                               ["name": "grpc", "port": 9090, "targetPort": 9090, "protocol": "grpc"],
                               ["name": "named", "port": 81, "targetPort": "web"]]],
        ]
        let text = ResourceTable.render(kind: .service, items: [s], showNamespace: false, wide: true, now: Self.now)
        #expect(text.contains("10.96.0.10   80→8080/http,9090/grpc,81→web/tcp"))
        #expect(text.contains("app=catalog"))
    }

    @Test("each kind shows its own columns", arguments: [
        (ResourceKind.namespace, ["NAME", "MESH", "AGE"]),
        (.service, ["NAME", "VIRTUAL-IP", "PORT(S)", "AGE"]),
        (.faultInjection, ["NAME", "DELAY", "ABORT", "AGE"]),
        (.httpRoute, ["NAME", "SERVICES", "HOSTNAMES", "AGE"]),
        (.authorizationPolicy, ["NAME", "ACTION", "AGE"]),
        (.peerAuthentication, ["NAME", "MODE", "AGE"]),
        (.destinationRule, ["NAME", "HOST", "LB", "AGE"]),
    ])
    func kindColumns(kind: ResourceKind, header: [String]) {
        #expect(ResourceTable.table(kind: kind, items: [], showNamespace: false).header == header)
    }

    @Test("policy, route, fault and namespace cells read their specs")
    func kindCells() {
        func row(_ kind: ResourceKind, _ spec: JSONValue) -> [String] {
            ResourceTable.table(kind: kind, items: [["metadata": ["name": "x", "namespace": "shop"], "spec": spec]],
                                showNamespace: false, now: Self.now).rows[0]
        }
        #expect(row(.namespace, ["mesh": ["enabled": true]])[1] == "enabled")
        #expect(row(.namespace, [:])[1] == "disabled")
        #expect(row(.authorizationPolicy, ["action": "DENY"])[1] == "DENY")
        #expect(row(.authorizationPolicy, [:])[1] == "ALLOW")
        #expect(row(.peerAuthentication, ["mtls": ["mode": "STRICT"]])[1] == "STRICT")
        #expect(row(.destinationRule, ["host": "catalog", "trafficPolicy": ["loadBalancer": ["simple": "LEAST_REQUEST"]]])[1...2]
                == ["catalog", "LEAST_REQUEST"])
        #expect(row(.destinationRule, ["host": "catalog", "trafficPolicy": ["loadBalancer": ["consistentHash": ["httpHeaderName": "x-user"]]]])[2]
                == "CONSISTENT_HASH")
        #expect(row(.httpRoute, ["parentRefs": [["group": "", "kind": "Service", "name": "catalog", "port": 80]],
                                 "hostnames": ["a.example", "b.example"]])[1...2] == ["catalog:80", "a.example,b.example"])
        #expect(row(.faultInjection, ["delay": ["fixedDelay": "5s", "percentage": ["value": 10]],
                                      "abort": ["httpStatus": 503, "percentage": ["value": 0.5]]])[1...2] == ["5s 10%", "503 0.5%"])
    }

    static let ageCases: [(TimeInterval, String)] = [
        (5, "5s"), (119, "119s"), (120, "2m"), (200, "3m20s"), (600, "10m"), (10_800, "3h"),
        (18_720, "5h12m"), (108_000, "30h"), (273_600, "3d4h"), (1_036_800, "12d"),
        (69_120_000, "2y70d"), (315_360_000, "10y"),
    ]

    @Test("ages read like kubectl's", arguments: ageCases)
    func ages(seconds: TimeInterval, expected: String) {
        #expect(ResourceTable.humanDuration(seconds) == expected)
    }

    @Test("age comes from creationTimestamp, with or without fractional seconds")
    func ageFromTimestamp() {
        #expect(ResourceTable.age(since: "2025-06-15T15:06:40Z", now: Self.now) == "0s")
        #expect(ResourceTable.age(since: "2025-06-15T15:01:40.123Z", now: Self.now) == "4m59s")
        #expect(ResourceTable.age(since: nil, now: Self.now) == "<unknown>")
        #expect(ResourceTable.age(since: "yesterday", now: Self.now) == "<unknown>")
    }

    @Test("status shows each node's version against the current one, and why a workload is not captured")
    func statusReport() {
        let later = ISO8601DateFormatter().string(from: Self.now.addingTimeInterval(86400))
        let report: JSONValue = [
            "revision": 12, "version": 7,
            "nodes": [
                ["name": "node-a", "appliedVersion": 7, "upToDate": true, "lastSeen": .string(Self.ago(20)),
                 "weftdVersion": "0.1.0", "credentialNotAfter": .string(later),
                 "certificates": [["spiffeID": "spiffe://cluster.local/ns/shop/sa/catalog", "notAfter": .string(later)]]],
                ["name": "node-b", "appliedVersion": 5, "upToDate": false, "lastSeen": .null, "weftdVersion": .null,
                 "credentialNotAfter": .string(Self.ago(3600)), "certificates": []],
            ],
            "workloads": [
                ["namespace": "shop", "name": "catalog-v1", "node": "node-a", "captured": true, "reason": .null,
                 "hooks": "9/9", "lastRepair": "2025-06-15T15:00:00Z"],
                ["namespace": "shop", "name": "db", "node": "node-c", "captured": .null,
                 "reason": "node node-c has not joined"],
            ],
        ]
        let text = StatusReport.render(report, now: Self.now)
        #expect(text.hasPrefix("Snapshot version 7 (store revision 12)\n"))
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("node-a") && $0.contains("7 (current)") && $0.contains("20s ago") && $0.contains("in 24h") })
        #expect(lines.contains { $0.hasPrefix("node-b") && $0.contains("5 (behind 7)") && $0.contains("never") && $0.contains("EXPIRED 60m ago") })
        #expect(lines.contains { $0.hasPrefix("shop") && $0.contains("catalog-v1") && $0.contains("yes")
                && $0.contains("9/9") && $0.contains("2025-06-15T15:00:00Z") }, "capture integrity: programs attached of expected, last repair")
        #expect(lines.contains { $0.contains("db") && $0.hasSuffix("node node-c has not joined") })
    }

    @Test("status without nodes says how to add one")
    func statusWithoutNodes() {
        let text = StatusReport.render(["revision": 1, "version": 1, "nodes": [], "workloads": []], now: Self.now)
        #expect(text.contains("No nodes have joined (weftctl node token create"))
    }
}
