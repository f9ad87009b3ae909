import Synchronization
import WeftCore

/// The service table the proxy consults for each captured connection,
/// replaced whole by the agent when a snapshot arrives, and a rotating start
/// point so that new connections spread over the endpoints.
public final class ServiceDirectory: Sendable {
    private let table = Mutex(ServiceTable())
    private let next = Atomic<Int>(0)

    public init() {}

    public func replace(_ t: ServiceTable) {
        table.withLock { $0 = t }
    }

    /// The endpoints to try for a destination, in order, when it is a
    /// service's virtual IP and port; nil when it is not a service.
    func endpoints(for address: IPAddress, port: UInt16) -> (service: String, namespace: String, name: String,
                                                             endpoints: [ServiceTable.Endpoint])? {
        guard var entry = table.withLock({ $0.lookup(address, port: port) }) else { return nil }
        if entry.endpoints.count > 1 {
            let start = next.add(1, ordering: .relaxed).newValue % entry.endpoints.count
            if start > 0 { entry.endpoints = Array(entry.endpoints[start...] + entry.endpoints[..<start]) }
        }
        return (entry.service, entry.namespace, entry.name, entry.endpoints)
    }
}
