import CWeftShim
import Testing
@testable import WeftBPF

/// The eBPF programs and weftd share bpf/weft_abi.h; these prove that clang's
/// BPF target and Swift's view of the header lay the structs out alike.
@Suite struct SharedABI {
    @Test func swiftAndTheCompiledProgramsAgreeOnEveryMapLayout() throws {
        let swiftSizes = [
            "weft_config": MemoryLayout<weft_config>.size,
            "weft_orig_dst": MemoryLayout<weft_orig_dst>.size,
            "weft_tuple_key": MemoryLayout<weft_tuple_key>.size,
            "weft_mtls_key": MemoryLayout<weft_mtls_key>.size,
            "weft_mtls_value": MemoryLayout<weft_mtls_value>.size,
            "weft_proxy_id": MemoryLayout<weft_proxy_id>.size,
            "weft_inbound_stats": MemoryLayout<weft_inbound_stats>.size,
        ]
        let btf = try CaptureDataplane.btfStructSizes(Array(swiftSizes.keys))
        #expect(btf == swiftSizes)
        #expect(swiftSizes == ["weft_config": 16, "weft_orig_dst": 40, "weft_tuple_key": 48, "weft_mtls_key": 16,
                               "weft_mtls_value": 8, "weft_proxy_id": 16, "weft_inbound_stats": 16])
    }

    @Test func everyHookIsAProgramOfTheEmbeddedObject() throws {
        // btfStructSizes opens the object; a missing program would surface
        // when the dataplane loads, which the privileged suite covers.
        #expect(CaptureHook.allCases.count == 10)
        #expect(Set(CaptureHook.attachOrder) == Set(CaptureHook.allCases), "every hook has its place in the attach order")
        #expect(EmbeddedBPFObjects.base64[CaptureDataplane.objectName] != nil)
    }
}
