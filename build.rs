//! Embeds the shipped metric catalog (`queries/*/v*.sql` and `queries/versions.lock`), so the
//! embedded default configuration has its metrics wherever the binary runs.

use std::path::Path;

fn main() {
    // Relative paths throughout (cargo resolves them against the package root, rustc against
    // CARGO_MANIFEST_DIR): two checkouts sharing one target dir then never read each other's files.
    let root = Path::new("queries");
    println!("cargo:rerun-if-changed=queries");
    let mut files = Vec::new();
    let mut folders: Vec<_> = std::fs::read_dir(root)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    folders.sort();
    for folder in folders.iter().filter(|p| p.is_dir()) {
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('_') {
            continue;
        }
        println!("cargo:rerun-if-changed={}", folder.display());
        let mut sql: Vec<_> = std::fs::read_dir(folder)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        sql.sort();
        files.extend(sql);
    }
    let lock = root.join("versions.lock");
    if lock.exists() {
        files.push(lock);
    }
    let mut out = String::from(
        "/// The shipped catalog: (path under queries/, content).\npub const FILES: &[(&str, &str)] = &[\n",
    );
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        out.push_str(&format!(
            "    ({relative:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/queries/{relative}\"))),\n"
        ));
    }
    out.push_str("];\n");
    let target = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded_queries.rs");
    std::fs::write(target, out).unwrap();
}
