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
        ]
        let btf = try CaptureDataplane.btfStructSizes(Array(swiftSizes.keys))
        #expect(btf == swiftSizes)
        #expect(swiftSizes == ["weft_config": 16, "weft_orig_dst": 40, "weft_tuple_key": 48])
    }

    @Test func everyHookIsAProgramOfTheEmbeddedObject() throws {
        // btfStructSizes opens the object; a missing program would surface
        // when the dataplane loads, which the privileged suite covers.
        #expect(CaptureHook.allCases.count == 9)
        #expect(Set(CaptureHook.attachOrder) == Set(CaptureHook.allCases), "every hook has its place in the attach order")
        #expect(EmbeddedBPFObjects.base64[CaptureDataplane.objectName] != nil)
    }
}
