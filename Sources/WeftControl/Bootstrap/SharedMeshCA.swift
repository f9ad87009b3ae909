import Foundation
import WeftIdentity
import WeftStore
import X509

/// The mesh CA of replicas that share one store (etcd).
///
/// The CA key is never put in the store: each replica's data dir holds
/// `ca/ca.crt` and `ca/ca.key`, copied there by the operator, exactly as for a
/// single server. What the store holds is the CA *certificate* (public), recorded
/// by the first replica to start, so that a replica started with another CA —
/// or with an empty data dir, which would make a fresh one — refuses to start
/// instead of splitting the mesh in two (nodes trust one CA).
enum SharedMeshCA {
    static let key = ResourceKey(kind: InternalKind.meshCA, name: "root")

    static func prepare(_ directory: DataDirectory, store: any ResourceStore, trustDomain: TrustDomain, listenHost: String,
                        where shared: String) async throws -> DataDirectory.Material {
        let recorded = try await store.get(key)
        let files = [MeshCA.certificateFileName, MeshCA.keyFileName].map { directory.caDirectory + "/" + $0 }
        if recorded != nil, !files.contains(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw BootstrapError("\(directory.caDirectory) holds no mesh CA, but the replicas sharing \(shared) already use one: copy ca/ca.crt and ca/ca.key (mode 0600) from another replica's data dir into \(directory.caDirectory) and start again (the CA key is never kept in etcd)")
        }
        let material = try directory.prepare(trustDomain: trustDomain, listenHost: listenHost)
        if let recorded {
            try check(recorded.body, material, directory, shared)
            return material
        }
        do {
            try await store.commit([.put(key, body: material.ca.certificatePEM, bumpGeneration: false, expectedVersion: 0)])
        } catch let error as StoreError where error.code == .conflict {
            // Another replica recorded its CA first.
            guard let now = try await store.get(key) else { throw error }
            try check(now.body, material, directory, shared)
        }
        return material
    }

    private static func check(_ recordedPEM: String, _ material: DataDirectory.Material, _ directory: DataDirectory, _ shared: String) throws {
        guard let recorded = try? PEM.decodeCertificate(recordedPEM), recorded == material.ca.certificate else {
            throw BootstrapError("the mesh CA in \(directory.caDirectory) is not the one the replicas sharing \(shared) use: copy ca/ca.crt and ca/ca.key from a working replica's data dir (or use another --etcd-prefix for a separate mesh)")
        }
    }
}
