import Testing
import WeftCore
@testable import WeftAgent

@Suite struct NodeConfigValidation {
    @Test func minimalConfigGetsTheDocumentedDefaults() throws {
        let c = try NodeConfig.parse(yaml: "node: node-a\n")
        #expect(c.node == "node-a")
        #expect(c.cgroupRoot == nil)
        #expect(c.bpfRoot == "/sys/fs/bpf/weft")
        #expect(c.outboundPort == 15001)
        #expect(c.proxyMark == 0x5746)
        #expect(c.adminHost == "127.0.0.1" && c.adminPort == 15021)
        #expect(c.exclusions.cidrs.map(\.description) == ["127.0.0.0/8", "::1/128"])
        #expect(c.exclusions.ports.isEmpty)
        #expect(c.namespaces.isEmpty)
        #expect(c.tunnelPort == 15008)
        #expect(c.socketRedirect)
        #expect(c.dns.enabled && c.dns.port == 15053 && c.dns.clusterDomain == "cluster.local" && c.dns.upstreams.isEmpty)
    }

    @Test func dnsAndTunnelSettingsAreRead() throws {
        let c = try NodeConfig.parse(yaml: """
            node: n1
            proxy: {tunnelPort: 16008}
            dns: {port: 5353, clusterDomain: mesh.example, upstreams: ["10.0.0.2", "10.0.0.3:5300", "[fd00::53]:53"], timeoutMs: 900}
            """)
        #expect(c.tunnelPort == 16008)
        #expect(c.dns.port == 5353 && c.dns.clusterDomain == "mesh.example" && c.dns.timeoutMs == 900)
        #expect(c.dns.upstreams.map { "\($0.host) \($0.port)" } == ["10.0.0.2 53", "10.0.0.3 5300", "fd00::53 53"])
        #expect(try !NodeConfig.parse(yaml: "node: n1\ndns: {enabled: false}").dns.enabled)
    }

    @Test func resolvConfNameserversAreTheDefaultUpstreams() {
        let text = "# generated\nsearch example.com\nnameserver 10.255.255.53\nnameserver  fd00::1\nnameserver bogus\noptions ndots:2\n"
        #expect(NodeConfig.resolvConfNameservers(text).map(\.host) == ["10.255.255.53", "fd00::1"])
    }

    @Test func fullConfigIsRead() throws {
        let c = try NodeConfig.parse(yaml: """
            node: n1
            cgroupRoot: /sys/fs/cgroup/unified/x
            reconcileIntervalMs: 200
            proxy: {outboundPort: 16001, mark: 0x10, connectTimeoutMs: 500, idleTimeoutSeconds: 60}
            admin: {address: "[::1]:9901"}
            capture: {excludePorts: [22, 53], excludeCIDRs: ["10.0.0.0/8"]}
            namespaces:
              - {name: shop, mesh: true}
              - {name: lab}
            workloads:
              - {namespace: shop, name: legacy, cgroup: /custom/legacy/, netns: /run/netns/legacy}
            """)
        #expect(c.outboundPort == 16001 && c.proxyMark == 0x10 && c.connectTimeoutMs == 500)
        #expect(c.adminHost == "::1" && c.adminPort == 9901)
        #expect(c.exclusions.ports == [22, 53])
        #expect(c.exclusions.cidrs.map(\.description) == ["10.0.0.0/8"])
        #expect(c.namespaces.map(\.mesh) == [true, false])
        #expect(c.workloads.first?.cgroup == "custom/legacy")
        #expect(c.workloads.first?.netns == "/run/netns/legacy")
        #expect(c.reconcileInterval == .milliseconds(200))
    }

    @Test(arguments: [
        ("nodee: a", "nodee"),
        ("", "(root)"),
        ("node: Node_A", "node"),
        ("node: a\nproxy: {outboundPort: 70000}", "proxy.outboundPort"),
        ("node: a\nproxy: {outbondPort: 1}", "proxy.outbondPort"),
        ("node: a\ncapture: {excludePorts: [22, x]}", "capture.excludePorts[1]"),
        ("node: a\ncapture: {excludeCIDRs: [10.0.0.0/8, 300.1.1.1/8]}", "capture.excludeCIDRs[1]"),
        ("node: a\nadmin: {address: localhost}", "admin.address"),
        ("node: a\nnamespaces: [{name: shop, mesh: maybe}]", "namespaces[0].mesh"),
        ("node: a\nnamespaces: [{name: shop}, {name: shop}]", "namespaces[1].name"),
        ("node: a\nnamespaces: [{name: Shop}]", "namespaces[0].name"),
        ("node: a\nworkloads: [{namespace: shop, name: w, cgroup: x}]", "workloads[0].namespace"),
        ("node: a\nnamespaces: [{name: shop}]\nworkloads: [{namespace: shop, name: w, cgroup: ../../etc}]", "workloads[0].cgroup"),
        ("node: a\nnamespaces: [{name: shop}]\nworkloads: [{namespace: shop, name: w}]", "workloads[0].cgroup"),
        ("node: a\nnamespaces: [{name: shop}]\nworkloads: [{namespace: shop, name: w, cgroup: x, netns: rel}]", "workloads[0].netns"),
        ("node: a\ncgroupRoot: relative/path", "cgroupRoot"),
        ("node: a\nreconcileIntervalMs: 1", "reconcileIntervalMs"),
        ("node: a\nproxy: {tunnelPort: 0}", "proxy.tunnelPort"),
        ("node: a\nproxy: {socketRedirect: sometimes}", "proxy.socketRedirect"),
        ("node: a\ndns: {upstreams: [\"resolver.example\"]}", "dns.upstreams[0]"),
        ("node: a\ndns: {upstreams: [\"[fd00::1]53\"]}", "dns.upstreams[0]"),
        ("node: a\ndns: {clusterDomain: \"bad..domain\"}", "dns.clusterDomain"),
        ("node: a\ndns: {port: 99999}", "dns.port"),
        ("node: a\ndns: {forward: true}", "dns.forward"),
        ("node: [a", "(yaml)"),
    ])
    func badInputIsRefusedNamingTheField(yaml: String, field: String) {
        do {
            _ = try NodeConfig.parse(yaml: yaml)
            Issue.record("accepted invalid config: \(yaml)")
        } catch let error as ValidationError {
            #expect(error.field == field, "\(error)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}

@Suite struct CgroupMountDiscovery {
    @Test func findsTheCgroup2MountOnAHybridHost() {
        let mountinfo = """
            30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
            31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
            32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
            """
        #expect(Cgroups.cgroup2Mount(mountinfo: mountinfo) == "/sys/fs/cgroup/unified")
    }

    @Test func optionalFieldsBeforeTheSeparatorDoNotConfuseIt() {
        let mountinfo = "40 1 0:30 / /mnt/my\\040cg rw shared:9 master:3 - cgroup2 none rw\n"
        #expect(Cgroups.cgroup2Mount(mountinfo: mountinfo) == "/mnt/my cg")
    }

    @Test func noCgroup2MountIsNil() {
        #expect(Cgroups.cgroup2Mount(mountinfo: "22 1 0:5 / /proc rw - proc proc rw\n") == nil)
    }
}

@Suite struct NodeConfigReload {
    @Test func theProxyMarkPortAndTimeoutsWaitForARestartSoProxyAndKernelAgree() throws {
        let running = try NodeConfig.parse(yaml: "node: a\nproxy: {mark: 0x10, outboundPort: 15001}\nnamespaces: [{name: shop, mesh: false}]")
        let edited = try NodeConfig.parse(yaml: """
            node: a
            proxy: {mark: 0x20, outboundPort: 16001, connectTimeoutMs: 10, idleTimeoutSeconds: 5, socketRedirect: false}
            capture: {excludePorts: [22]}
            namespaces: [{name: shop, mesh: true}]
            """)
        let (applied, restartOnly) = running.reloaded(from: edited)
        #expect(applied.proxyMark == 0x10)
        #expect(applied.outboundPort == 15001)
        #expect(applied.connectTimeoutMs == running.connectTimeoutMs)
        #expect(applied.idleTimeoutSeconds == running.idleTimeoutSeconds)
        // Socket redirect too: a connection's bytes must take one path throughout.
        #expect(applied.socketRedirect)
        #expect(restartOnly == ["proxy.connectTimeoutMs", "proxy.idleTimeoutSeconds", "proxy.mark", "proxy.outboundPort",
                                "proxy.socketRedirect"])
        // What may change at runtime does.
        #expect(applied.exclusions.ports == [22])
        #expect(applied.namespaces.first?.mesh == true)
    }

    @Test func underWeftControlTheFileCannotChangeNamespaces() throws {
        var running = try NodeConfig.parse(yaml: "node: a\ncontrol: {server: https://127.0.0.1:15443, caFile: /ca.crt}")
        running.namespaces = [.init(name: try NamespaceName("shop"), mesh: true)]
        let edited = try NodeConfig.parse(yaml: "node: a\ncontrol: {server: https://127.0.0.1:15443, caFile: /ca.crt}")
        let (applied, restartOnly) = running.reloaded(from: edited)
        #expect(applied.namespaces == running.namespaces)
        #expect(restartOnly.isEmpty)
    }

    @Test func controlIsRefusedTogetherWithNamespacesInTheFile() {
        #expect(throws: ValidationError.self) {
            try NodeConfig.parse(yaml: "node: a\nnamespaces: [{name: shop}]\ncontrol: {server: https://h:1, caFile: /c}")
        }
        #expect(throws: ValidationError.self) {
            try NodeConfig.parse(yaml: "node: a\ncontrol: {server: http://h:1, caFile: /c}")
        }
    }
}

@Suite struct ControlReplicaEndpoints {
    @Test func serversListsEveryReplicaAndServerStaysTheFirst() throws {
        let c = try NodeConfig.parse(yaml: """
            node: a
            control:
              servers: [https://10.0.0.1:15443, https://10.0.0.2:15443]
              caFile: /ca.crt
            """)
        #expect(c.control?.servers == ["https://10.0.0.1:15443", "https://10.0.0.2:15443"])
        #expect(c.control?.server == "https://10.0.0.1:15443")
        // The single form keeps working, as a list of one.
        let one = try NodeConfig.parse(yaml: "node: a\ncontrol: {server: https://10.0.0.1:15443, caFile: /ca.crt}")
        #expect(one.control?.servers == ["https://10.0.0.1:15443"])
    }

    @Test func badServerListsAreRefusedNamingTheEntry() {
        func field(_ control: String) -> String? {
            do {
                _ = try NodeConfig.parse(yaml: "node: a\ncontrol: {\(control), caFile: /ca.crt}")
                return nil
            } catch {
                return (error as? ValidationError)?.field
            }
        }
        #expect(field("servers: [https://a:1, http://b:1]") == "control.servers[1]")
        #expect(field("servers: [https://a:1, https://a:1]") == "control.servers[1]")
        #expect(field("servers: []") == "control.servers")
        #expect(field("server: https://a:1, servers: [https://b:1]") == "control.servers")
        #expect(field("tokenFile: /t") == "control.server")
    }

    @Test func aFailedReplicaHandsOverToTheNextRoundTheList() {
        var replicas = ControlReplicas(["https://a:1", "https://b:1", "https://c:1"])
        #expect(replicas.current == "https://a:1")
        replicas.advance()
        #expect(replicas.current == "https://b:1")
        replicas.advance()
        replicas.advance()
        #expect(replicas.current == "https://a:1")
    }
}
