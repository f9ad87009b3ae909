import Foundation
import PackagePlugin

/// Compiles every `bpf/*.c` with the toolchain's clang (`-target bpf`) and
/// embeds the objects into the target as base64 literals, so weftd is one
/// self-contained binary that loads them with `bpf_object__open_mem`.
@main
struct BPFObjectsPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let bpfDir = context.package.directoryURL.appending(path: "bpf")
        let fm = FileManager.default
        let entries = try fm.subpathsOfDirectory(atPath: bpfDir.path)
        let sources = entries.filter { $0.hasSuffix(".c") && !$0.contains("/") }.sorted()
        let headers = entries.filter { $0.hasSuffix(".h") }.sorted().map { bpfDir.appending(path: $0) }
        let clang = try context.tool(named: "clang")
        let embed = try context.tool(named: "weft-bpf-embed")
        let outDir = context.pluginWorkDirectoryURL

        #if arch(x86_64)
        let (multiarch, targetArch) = ("x86_64-linux-gnu", "x86")
        #elseif arch(arm64)
        let (multiarch, targetArch) = ("aarch64-linux-gnu", "arm64")
        #else
        let (multiarch, targetArch) = ("", "")
        #endif

        var commands: [Command] = []
        var objects: [URL] = []
        for source in sources {
            let input = bpfDir.appending(path: source)
            let object = outDir.appending(path: source.replacingOccurrences(of: ".c", with: ".bpf.o"))
            objects.append(object)
            commands.append(.buildCommand(
                displayName: "Compiling eBPF \(source)",
                executable: clang.url,
                arguments: [
                    "-target", "bpf", "-O2", "-g", "-Wall", "-Werror",
                    "-D__TARGET_ARCH_\(targetArch)",
                    "-I", "/usr/include/\(multiarch)",
                    "-I", bpfDir.path,
                    "-c", input.path, "-o", object.path,
                ],
                inputFiles: [input] + headers,
                outputFiles: [object]
            ))
        }
        let generated = outDir.appending(path: "EmbeddedBPFObjects.swift")
        commands.append(.buildCommand(
            displayName: "Embedding eBPF objects",
            executable: embed.url,
            arguments: [generated.path] + objects.map(\.path),
            inputFiles: objects,
            outputFiles: [generated]
        ))
        return commands
    }
}
