//! Content fingerprints of input files, so a stage can tell whether its inputs changed.

use crate::error::{Error, Result};
use crate::rng::{fnv1a64_extend, FNV1A64_START};
use std::io::Read;
use std::path::Path;

/// FNV-1a 64 of a file's bytes, in hex, read in bounded pieces.
pub fn fingerprint(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h = FNV1A64_START;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h = fnv1a64_extend(h, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_read_in_pieces_hashes_like_its_bytes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let expected = format!("{:016x}", crate::rng::fnv1a64(&bytes));
        assert_eq!(fingerprint(&path).unwrap(), expected);
        assert_eq!(
            fingerprint(&dir.path().join("missing"))
                .unwrap_err()
                .exit_code(),
            1
        );
    }
}
