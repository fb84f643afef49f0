//! What `predict` reads and where it may write: the input listing (regular PNG, JPEG and DICOM
//! files; any other entry with such a name becomes a per-file failure, never an open; every
//! other file is named as skipped, with the reason), optionally through subfolders, and the check
//! that no output name lands on an input file.

use super::slice_file::{output_stem, SliceKind};
use crate::error::{Error, Result};
use crate::pixels::file_bytes::file_kind;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One file `predict` was asked to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// As listed.
    pub path: PathBuf,
    /// The folder, relative to `--input`, that holds it: its outputs go to the same folder
    /// under `--out` (empty unless `--recursive` found it in a subfolder).
    pub folder: PathBuf,
    /// Why it cannot be read (a FIFO, a device, a broken link), or `None` for a regular file.
    pub unusable: Option<String>,
    /// PNG, JPEG or DICOM.
    pub kind: SliceKind,
    /// What its output files are named by: the file stem, or a DICOM slice's SOP instance UID.
    pub stem: String,
}

/// What a listing found: the slice files to read, sorted, and every other entry with the reason
/// it is not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The slice files.
    pub files: Vec<Input>,
    /// Entries that are not read, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Why a file that is not a slice file is not read.
const NOT_A_SLICE: &str = "not a slice file (predict reads .png, .jpg and DICOM)";

/// The slice files to read: the file itself, or a directory's PNG, JPEG and DICOM entries, and with
/// `recursive` those of every subfolder too (links to folders are not followed). Entries that
/// are not regular files (after following links) are listed with the reason, so that they are
/// reported as failures while the others are processed.
/// DICOM files' output stems come from their headers, read under `max_pixels`.
pub fn list_inputs(input: &Path, recursive: bool, max_pixels: u64) -> Result<Listing> {
    let meta = std::fs::metadata(input).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::input(input, "not found")
        } else {
            Error::io(input, e)
        }
    })?;
    if meta.is_file() {
        let Some(kind) = SliceKind::of(input) else {
            return Err(Error::input(input, NOT_A_SLICE));
        };
        return Ok(Listing {
            files: vec![Input {
                path: input.to_path_buf(),
                folder: PathBuf::new(),
                unusable: None,
                kind,
                stem: output_stem(input, kind, max_pixels),
            }],
            skipped: Vec::new(),
        });
    }
    if !meta.is_dir() {
        return Err(Error::input(
            input,
            format!(
                "{}, not a slice file or a directory; not read",
                file_kind(&meta.file_type())
            ),
        ));
    }
    let mut listing = Listing::default();
    let mut folders = vec![PathBuf::new()];
    while let Some(folder) = folders.pop() {
        let dir = input.join(&folder);
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                if recursive {
                    folders.push(folder.join(entry.file_name()));
                } else {
                    listing
                        .skipped
                        .push((path, "a folder (--recursive reads subfolders)".into()));
                }
                continue;
            }
            let Some(kind) = SliceKind::of(&path) else {
                let reason = match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => "a link to a folder; not followed".into(),
                    _ => NOT_A_SLICE.to_string(),
                };
                listing.skipped.push((path, reason));
                continue;
            };
            let unusable = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => None,
                Ok(m) => Some(format!(
                    "{}, not a regular file; not read",
                    file_kind(&m.file_type())
                )),
                Err(e) => Some(e.to_string()),
            };
            let stem = match unusable {
                None => output_stem(&path, kind, max_pixels),
                Some(_) => output_stem(&path, SliceKind::Png, max_pixels),
            };
            listing.files.push(Input {
                path,
                folder: folder.clone(),
                unusable,
                kind,
                stem,
            });
        }
    }
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    listing.skipped.sort();
    if listing.files.is_empty() {
        let hint = if recursive {
            ""
        } else {
            " (--recursive reads subfolders)"
        };
        return Err(Error::input(
            input,
            format!("no slice files (.png, .jpg, DICOM) in this directory{hint}"),
        ));
    }
    Ok(listing)
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
        for name in outputs(&input.stem) {
            let target = out_dir.join(&input.folder).join(&name);
            let real = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
            if let Some(victim) = by_real_path.get(&real) {
                return Err(Error::Usage(format!(
                    "{}: the output for {} would overwrite the input {}; predict never writes over its input, so pass another --out",
                    out.join(&input.folder).join(&name).display(),
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
        let err = list_inputs(&dir.path().join("missing"), false, 1 << 24).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = list_inputs(dir.path(), false, 1 << 24).unwrap_err();
        assert!(err.to_string().contains("no slice files"), "{err}");
        std::fs::write(dir.path().join("b.PNG"), b"x").unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("c.txt"), b"x").unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("z.png")).unwrap();
        let listing = list_inputs(dir.path(), false, 1 << 24).unwrap();
        let files = &listing.files;
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
        assert_eq!(listing.skipped.len(), 1);
        assert!(listing.skipped[0].0.ends_with("c.txt"));
        assert_eq!(listing.skipped[0].1, NOT_A_SLICE);
        let err = list_inputs(Path::new("/dev/zero"), false, 1 << 24).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn recursive_listing_keeps_each_file_s_folder_and_names_what_it_skips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("p1/n1")).unwrap();
        std::fs::write(root.join("top.png"), b"x").unwrap();
        std::fs::write(root.join("p1/n1/s.png"), b"x").unwrap();
        std::fs::write(root.join("p1/scan.jpg"), b"x").unwrap();
        std::fs::write(root.join("p1/notes.md"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("p1"), root.join("loop")).unwrap();
        let flat = list_inputs(root, false, 1 << 24).unwrap();
        assert_eq!(flat.files.len(), 1);
        let reasons: Vec<&str> = flat.skipped.iter().map(|(_, r)| r.as_str()).collect();
        assert!(
            reasons.contains(&"a folder (--recursive reads subfolders)"),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&"a link to a folder; not followed"),
            "{reasons:?}"
        );
        let deep = list_inputs(root, true, 1 << 24).unwrap();
        let got: Vec<(PathBuf, PathBuf)> = deep
            .files
            .iter()
            .map(|i| {
                (
                    i.path.strip_prefix(root).unwrap().to_path_buf(),
                    i.folder.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (PathBuf::from("p1/n1/s.png"), PathBuf::from("p1/n1")),
                (PathBuf::from("p1/scan.jpg"), PathBuf::from("p1")),
                (PathBuf::from("top.png"), PathBuf::new()),
            ]
        );
        assert_eq!(deep.files[1].kind, SliceKind::Jpeg);
        let notes = deep
            .skipped
            .iter()
            .find(|(p, _)| p.ends_with("notes.md"))
            .unwrap();
        assert_eq!(notes.1, NOT_A_SLICE);
        // Only a subfolder holds PNGs: without --recursive that is an error with the hint.
        std::fs::remove_file(root.join("top.png")).unwrap();
        let err = list_inputs(root, false, 1 << 24).unwrap_err();
        assert!(err.to_string().contains("--recursive"), "{err}");
    }

    #[test]
    fn an_output_that_is_an_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let names = |stem: &str| vec![format!("{stem}_mask.png")];
        let inputs = list_inputs(dir.path(), false, 1 << 24).unwrap().files;
        // Beside the input, under a new name: allowed.
        check_no_overwrite(&inputs, dir.path(), names).unwrap();
        std::fs::write(dir.path().join("a_mask.png"), b"x").unwrap();
        let inputs = list_inputs(dir.path(), false, 1 << 24).unwrap().files;
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
