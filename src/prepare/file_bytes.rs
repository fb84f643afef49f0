//! Reads input files into one reused buffer per worker, in as few system calls as possible:
//! prepare opens five small files per slice, and on this machine the calls cost as much as
//! inflating the masks.

use std::fs::File;
use std::io::{self, Read};

/// A first read asks for this much. LIDC slices are 1-70 KiB; bigger files take more reads.
const FIRST_READ: usize = 256 * 1024;

/// A file's bytes, read into a buffer that is reused from file to file.
#[derive(Debug, Default)]
pub struct FileBytes {
    buf: Vec<u8>,
    len: usize,
}

impl FileBytes {
    /// Starts reading `file` with a single `read` call. For a regular file smaller than the
    /// request that call returns the whole file, so callers that can check completeness
    /// themselves (a PNG ends with IEND and its CRC) can use [`FileBytes::bytes`] at once and
    /// skip the end-of-file call; otherwise they call [`FileBytes::read_rest`].
    pub fn read_first(&mut self, file: &mut File) -> io::Result<()> {
        if self.buf.len() < FIRST_READ {
            self.buf.resize(FIRST_READ, 0);
        }
        self.len = read_retrying(file, &mut self.buf)?;
        Ok(())
    }

    /// Reads on to the end of the file.
    pub fn read_rest(&mut self, file: &mut File) -> io::Result<()> {
        loop {
            if self.len == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = read_retrying(file, &mut self.buf[self.len..])?;
            if n == 0 {
                return Ok(());
            }
            self.len += n;
        }
    }

    /// The bytes read so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// One `read`, repeated if a signal interrupted it.
fn read_retrying(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_and_large_files_whole_with_one_reused_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..FIRST_READ * 2 + 17).map(|i| (i % 251) as u8).collect();
        let small = b"tiny".to_vec();
        let mut bytes = FileBytes::default();
        for content in [&big, &small, &Vec::new(), &big] {
            let path = dir.path().join("f");
            std::fs::write(&path, content).unwrap();
            let mut f = File::open(&path).unwrap();
            bytes.read_first(&mut f).unwrap();
            // One read takes at least the first FIRST_READ bytes (more once the buffer grew).
            let first = bytes.bytes().len();
            assert!(first >= content.len().min(FIRST_READ) && first <= content.len());
            assert_eq!(bytes.bytes(), &content[..first]);
            bytes.read_rest(&mut f).unwrap();
            assert_eq!(bytes.bytes(), &content[..]);
        }
    }
}
