//! Reading a runbook file. Every command that reads one (`validate`, `run`, `list`, `resume`) goes
//! through [`read`], so each says the same thing about a directory, a FIFO or bytes that are not
//! UTF-8.

use super::node::Pos;
use crate::diag::{Diagnostic, Report};
use std::io::Read as _;
use std::path::Path;

/// The largest runbook file read: far above any real runbook (the YAML node budget stops a file long
/// before this), and small enough that a mistaken path (a log, a disk image) is refused instead of
/// read into memory.
pub const MAX_SOURCE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the runbook file at `path` as UTF-8 text. Errors are reports about that file, so they
/// render like validation errors: the offending byte of non-UTF-8 text is located by line and
/// column. The file type is checked before the file is opened: opening a FIFO would block.
pub fn read(path: &Path) -> Result<String, Report> {
    let file = path.display().to_string();
    let fail = |d: Diagnostic, source: String| Report {
        file: file.clone(),
        source,
        diagnostics: vec![d],
    };
    let unplaced =
        |msg: String, help: &str| fail(Diagnostic::unplaced(msg).help(help), String::new());
    let io_error = |e: std::io::Error| {
        fail(
            Diagnostic::unplaced(format!("cannot read the file: {e}")),
            String::new(),
        )
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unplaced(
                "no such file".to_string(),
                "give the path of a `.yaml` file, or a runbook's name (`runbook list` shows them)",
            ));
        }
        Err(e) => return Err(io_error(e)),
    };
    if meta.is_dir() {
        return Err(unplaced(
            "this is a directory, not a runbook file".to_string(),
            "give the path of a `.yaml` file in it, or a runbook's name (`runbook list` shows them)",
        ));
    }
    if !meta.is_file() {
        return Err(unplaced(
            format!("this is {}, not a runbook file", special_kind(&meta)),
            "a runbook is read from a regular `.yaml` file",
        ));
    }
    let too_big = |n: u64| {
        unplaced(
            format!(
                "the file is {} MiB; a runbook file may be at most {} MiB",
                n.div_ceil(1024 * 1024),
                MAX_SOURCE_BYTES / (1024 * 1024)
            ),
            "check the path: a runbook is a `.yaml` file",
        )
    };
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SOURCE_BYTES + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        return Err(io_error(e));
    }
    // The file may have grown between the size check and the read.
    if bytes.len() as u64 > MAX_SOURCE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.into_bytes();
        let (pos, byte) = first_invalid(&bytes);
        let help = if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
            "the file looks like UTF-16; save it as UTF-8"
        } else {
            "save the runbook as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE`)"
        };
        fail(
            Diagnostic::new(
                pos,
                format!("the file is not UTF-8 text (byte 0x{byte:02x})"),
            )
            .label("not UTF-8")
            .help(help),
            // Shown with the bad bytes replaced; up to the first one, offsets are unchanged.
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    })
}

/// Where the first byte that is not UTF-8 sits (1-based line, column in characters) and its value.
fn first_invalid(bytes: &[u8]) -> (Pos, u8) {
    let valid_up_to = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    };
    // Everything before `valid_up_to` is valid UTF-8 by definition.
    let before = std::str::from_utf8(&bytes[..valid_up_to]).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    let pos = Pos {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
        offset: valid_up_to,
        // U+FFFD, which stands for the bad byte in the text shown.
        len: '\u{FFFD}'.len_utf8(),
    };
    (pos, bytes.get(valid_up_to).copied().unwrap_or(0))
}

#[cfg(unix)]
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::Metadata) -> &'static str {
    "a special file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_the_first_bad_byte_by_line_and_character() {
        let (pos, byte) = first_invalid(b"name: x\nti\xc3\xa9tle: \xff\xfe\n");
        assert_eq!((pos.line, pos.col, byte), (2, 9, 0xff));
        assert_eq!(pos.offset, 17);
    }

    #[test]
    fn a_truncated_sequence_at_the_end_is_located_too() {
        let (pos, byte) = first_invalid(b"a: \xe2\x82");
        assert_eq!((pos.line, pos.col, byte), (1, 4, 0xe2));
    }
}
