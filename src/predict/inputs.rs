//! What `predict` reads and where it may write: the input listing (regular PNG files only; any
//! other entry named `*.png` becomes a per-file failure, never an open), and the check that no
//! output name lands on an input file.

use crate::error::{Error, Result};
use crate::pixels::file_bytes::file_kind;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One file `predict` was asked to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// As listed.
    pub path: PathBuf,
    /// Why it cannot be read (a FIFO, a device, a broken link), or `None` for a regular file.
    pub unusable: Option<String>,
}

/// The PNG files to read: the file itself, or a directory's `*.png` entries (not recursive),
/// sorted. Entries that are not regular files (after following links) are listed with the
/// reason, so that they are reported as failures while the others are processed.
pub fn list_inputs(input: &Path) -> Result<Vec<Input>> {
    let meta = std::fs::metadata(input).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::input(input, "not found")
        } else {
            Error::io(input, e)
        }
    })?;
    if meta.is_file() {
        return Ok(vec![Input {
            path: input.to_path_buf(),
            unusable: None,
        }]);
    }
    if !meta.is_dir() {
        return Err(Error::input(
            input,
            format!(
                "{}, not a PNG file or a directory; not read",
                file_kind(&meta.file_type())
            ),
        ));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(input).map_err(|e| Error::io(input, e))? {
        let path = entry.map_err(|e| Error::io(input, e))?.path();
        let is_png = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png {
            continue;
        }
        let unusable = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => None,
            Ok(m) => Some(format!(
                "{}, not a regular file; not read",
                file_kind(&m.file_type())
            )),
            Err(e) => Some(e.to_string()),
        };
        files.push(Input { path, unusable });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(Error::input(input, "no .png files in this directory"));
    }
    Ok(files)
}

/// Refuses to start when an output file (named by `outputs` from an input's stem) inside `out`
/// would be one of the input files, whether `out` is the input folder itself or a link to it.
pub fn check_no_overwrite(
    inputs: &[Input],
    out: &Path,
    outputs: impl Fn(&str) -> Vec<String>,
) -> Result<()> {
    // A directory that does not exist yet holds no input.
    let Ok(out_dir) = std::fs::canonicalize(out) else {
        return Ok(());
    };
    let by_real_path: HashMap<PathBuf, &Path> = inputs
        .iter()
        .filter_map(|i| {
            std::fs::canonicalize(&i.path)
                .ok()
                .map(|c| (c, i.path.as_path()))
        })
        .collect();
    for input in inputs {
        for name in outputs(&super::stem_of(&input.path)) {
            let target = out_dir.join(&name);
            let real = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
            if let Some(victim) = by_real_path.get(&real) {
                return Err(Error::Usage(format!(
                    "{}: the output for {} would overwrite the input {}; predict never writes over its input, so pass another --out",
                    out.join(&name).display(),
                    input.path.display(),
                    victim.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_png_files_and_names_special_entries() {
        let dir = tempfile::tempdir().unwrap();
        let err = list_inputs(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = list_inputs(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no .png files"), "{err}");
        std::fs::write(dir.path().join("b.PNG"), b"x").unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("c.txt"), b"x").unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("z.png")).unwrap();
        let files = list_inputs(dir.path()).unwrap();
        let got: Vec<(String, bool)> = files
            .iter()
            .map(|i| {
                let name = i.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, i.unusable.is_some())
            })
            .collect();
        let want = [("a.png", false), ("b.PNG", false), ("z.png", true)];
        let want: Vec<(String, bool)> = want.iter().map(|(n, u)| (n.to_string(), *u)).collect();
        assert_eq!(got, want);
        assert!(files[2]
            .unusable
            .as_deref()
            .unwrap()
            .contains("character device"));
        let err = list_inputs(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn an_output_that_is_an_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let names = |stem: &str| vec![format!("{stem}_mask.png")];
        let inputs = list_inputs(dir.path()).unwrap();
        // Beside the input, under a new name: allowed.
        check_no_overwrite(&inputs, dir.path(), names).unwrap();
        std::fs::write(dir.path().join("a_mask.png"), b"x").unwrap();
        let inputs = list_inputs(dir.path()).unwrap();
        let err = check_no_overwrite(&inputs, dir.path(), names).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("would overwrite the input"),
            "{err}"
        );
        // Through a link to the input folder too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(check_no_overwrite(&inputs, &link, names).is_err());
        check_no_overwrite(&inputs, &dir.path().join("new"), names).unwrap();
    }
}
