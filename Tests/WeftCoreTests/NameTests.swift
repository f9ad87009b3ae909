import Testing
@testable import WeftCore

@Suite struct Names {
    @Test(arguments: ["shop", "a", "shop-2", String(repeating: "a", count: 63)])
    func acceptsDNSLabelsAsNamespaces(name: String) throws {
        #expect(try NamespaceName(name).rawValue == name)
    }

    @Test(arguments: ["", "Shop", "-shop", "shop-", "sh_op", "sh.op", String(repeating: "a", count: 64)])
    func refusesOtherNamespaceNames(name: String) {
        #expect(throws: ValidationError.self) { try NamespaceName(name, field: "namespaces[0].name") }
    }

    @Test func workloadNamesAcceptSystemdUnitNames() throws {
        #expect(try WorkloadName("catalog-v1.service").rawValue == "catalog-v1.service")
        #expect(try WorkloadName("getty@tty1.service").rawValue == "getty@tty1.service")
        #expect(throws: ValidationError.self) { try WorkloadName("a/b") }
        #expect(throws: ValidationError.self) { try WorkloadName("..") }
    }
}

@Suite struct SystemdNaming {
    @Test func namespaceSlicesNestUnderWeftSliceLikeSystemdDoes() throws {
        let shop = try NamespaceName("shop")
        #expect(SystemdNames.slice(for: shop) == "weft-shop.slice")
        #expect(SystemdNames.slicePath(for: shop) == "weft.slice/weft-shop.slice")
    }

    @Test func dashesInNamespaceNamesAreEscapedAsSystemdEscapeDoes() throws {
        // `systemd-escape my-ns` prints my\x2dns; unescaped, systemd would
        // read weft-my-ns.slice as a child of weft-my.slice.
        let ns = try NamespaceName("my-ns")
        #expect(SystemdNames.slice(for: ns) == "weft-my\\x2dns.slice")
        #expect(SystemdNames.namespace(fromSlice: "weft-my\\x2dns.slice") == ns)
    }

    @Test func onlyWeftSlicesNameNamespaces() {
        #expect(SystemdNames.namespace(fromSlice: "system.slice") == nil)
        #expect(SystemdNames.namespace(fromSlice: "weft-a-b.slice") == nil)
        #expect(SystemdNames.namespace(fromSlice: "weft-shop.slice")?.rawValue == "shop")
    }
}
