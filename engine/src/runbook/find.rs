//! Finding runbooks: a path, or a name looked up in `./runbooks` and `RUNBOOK_PATH`.

use std::path::{Path, PathBuf};

/// Directories searched for runbooks by name, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("runbooks")];
    if let Ok(p) = std::env::var("RUNBOOK_PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    dirs
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// Every runbook file in the search directories and their immediate subdirectories.
pub fn all_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if let Ok(sub) = std::fs::read_dir(&p) {
                    let mut sub: Vec<PathBuf> = sub
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file() && is_yaml(p))
                        .collect();
                    sub.sort();
                    out.extend(sub);
                }
            } else if is_yaml(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Resolves `NAME|FILE` to a file.
pub fn resolve(arg: &str) -> Result<PathBuf, String> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if is_yaml(p) || arg.contains('/') {
        // A path that exists but is no regular file (a directory, a FIFO) goes on to the reader,
        // which says what it is instead of "no such file".
        if p.exists() {
            return Ok(p.to_path_buf());
        }
        return Err(format!("no such file: {arg}"));
    }
    let found: Vec<PathBuf> = all_files()
        .into_iter()
        .filter(|f| f.file_stem().and_then(|s| s.to_str()) == Some(arg))
        .collect();
    match found.len() {
        0 => {
            let dirs: Vec<String> = search_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            let names: Vec<String> = all_files()
                .iter()
                .filter_map(|f| f.file_stem().and_then(|s| s.to_str()).map(str::to_string))
                .collect();
            let hint = match crate::diag::suggest(arg, names.iter().map(String::as_str)) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => String::new(),
            };
            Err(format!(
                "no runbook named `{arg}` in {} (set RUNBOOK_PATH to search elsewhere, or give a file path){hint}",
                dirs.join(", ")
            ))
        }
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        _ => Err(format!(
            "`{arg}` is ambiguous: {}; give the file path",
            found
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
