//! Reads input files into one reused buffer per worker, in as few system calls as possible:
//! prepare opens five small files per slice, and on this machine the calls cost as much as
//! inflating the masks. Reads stop at a size cap, and files are opened without blocking, so
//! that a FIFO or a link to `/dev/zero` named like a slice can neither hang nor exhaust memory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

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

    /// Reads on to the end of the file, or fails with [`io::ErrorKind::FileTooLarge`] once more
    /// than `max_bytes` were read (the buffer never grows beyond `max_bytes + 1`).
    pub fn read_rest(&mut self, file: &mut File, max_bytes: u64) -> io::Result<()> {
        let limit = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        loop {
            if self.len >= limit {
                return Err(too_large(max_bytes));
            }
            if self.len == self.buf.len() {
                let grown = self.buf.len().max(1).saturating_mul(2).min(limit);
                self.buf.resize(grown, 0);
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

/// The error of a file over the size cap.
fn too_large(max_bytes: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("file holds more than {max_bytes} bytes, the most an image under --max-pixels can take; not read"),
    )
}

/// Opens `path` for reading without blocking: a FIFO opens at once (and reads as empty) instead
/// of waiting for a writer. Regular files read as usual.
pub fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Reads a whole regular file of at most `max_bytes` bytes. Anything else (a FIFO, a device, a
/// folder) fails with [`io::ErrorKind::InvalidInput`] naming its type, without being read.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut file = open_nonblocking(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}, not a regular file; not read",
                file_kind(&meta.file_type())
            ),
        ));
    }
    if meta.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    let mut bytes = FileBytes::default();
    bytes.read_first(&mut file)?;
    bytes.read_rest(&mut file, max_bytes)?;
    bytes.buf.truncate(bytes.len);
    Ok(bytes.buf)
}

/// What a file that is not a regular file is, in words.
pub fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
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
            bytes.read_rest(&mut f, u64::MAX).unwrap();
            assert_eq!(bytes.bytes(), &content[..]);
        }
    }

    #[test]
    fn reading_stops_at_the_cap_and_special_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; FIRST_READ + 100]).unwrap();
        let mut bytes = FileBytes::default();
        let mut f = File::open(&path).unwrap();
        bytes.read_first(&mut f).unwrap();
        let err = bytes.read_rest(&mut f, FIRST_READ as u64 + 99).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(bytes.buf.len() <= FIRST_READ + 100);
        assert_eq!(
            read_regular_file(&path, u64::MAX).unwrap().len(),
            FIRST_READ + 100
        );
        let err = read_regular_file(&path, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        // /dev/zero never ends: the cap stops it.
        let mut zero = open_nonblocking(Path::new("/dev/zero")).unwrap();
        bytes.read_first(&mut zero).unwrap();
        let err = bytes.read_rest(&mut zero, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        let err = read_regular_file(Path::new("/dev/zero"), u64::MAX).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        assert!(read_regular_file(dir.path(), u64::MAX).is_err());
    }
}
