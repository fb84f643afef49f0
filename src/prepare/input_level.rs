//! Explains an input in which the walk found no slice at all, and guesses the folder that was
//! meant: `--input` one level too high (a folder that holds the tree, e.g. the parent of
//! `LIDC-IDRI-slices/`) or too low (a patient, nodule or `images/` folder).

use crate::error::Error;
use crate::prepare::walk::TreeWalk;
use crate::wording::count;
use std::path::{Path, PathBuf};

/// Folder entries the guess looks at, at most: it stops at the first match, and this bounds it
/// on a large folder that holds no tree at all.
const LOOK_BUDGET: usize = 20_000;

/// The exit-2 error for an input tree without a single slice. `input` is canonical.
pub fn no_slices(input: &Path, tree: &TreeWalk) -> Error {
    let found = format!(
        "no slices found ({}, {} with images/, {})",
        count(tree.patients, "patient folder"),
        count(tree.nodules, "nodule folder"),
        count(tree.rejects.len(), "rejected entry")
    );
    if holds_dicom(input) {
        return Error::input(
            input,
            format!("{found}: this looks like the TCIA download (DICOM files); did you mean --source tcia?"),
        );
    }
    let message = match guess(input) {
        Some((what, meant)) => format!(
            "{found}: this looks like {what}; did you mean --input {}?",
            meant.display()
        ),
        None => format!("{found}; expected <patient>/<nodule>/images/*.png below this folder"),
    };
    Error::input(input, message)
}

/// (what `input` looks like, the folder that was probably meant).
fn guess(input: &Path) -> Option<(&'static str, PathBuf)> {
    let up = |n: usize| input.ancestors().nth(n).map(Path::to_path_buf);
    let has_images = |dir: &Path| dir.join("images").is_dir();
    if has_images(input) {
        return Some(("a nodule folder", up(2)?));
    }
    if input.file_name().is_some_and(|n| n == "images") && input.parent().is_some_and(has_images) {
        return Some(("an images/ folder", up(3)?));
    }
    let mut budget = LOOK_BUDGET;
    let children = subdirs(input, &mut budget);
    if children.iter().any(|c| has_images(c)) {
        return Some(("a patient folder", up(1)?));
    }
    for child in children {
        for patient in subdirs(&child, &mut budget) {
            if subdirs(&patient, &mut budget).iter().any(|n| has_images(n)) {
                return Some(("a folder that holds the tree", child));
            }
        }
    }
    None
}

/// Whether a `.dcm` file lies within four folder levels of `input` (the TCIA layout is
/// patient/study/series/*.dcm), looking at no more than [`LOOK_BUDGET`] entries.
fn holds_dicom(input: &Path) -> bool {
    let mut budget = LOOK_BUDGET;
    let mut level = vec![input.to_path_buf()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if budget == 0 {
                    return false;
                }
                budget -= 1;
                let path = entry.path();
                if path.is_dir() {
                    next.push(path);
                } else if path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
                {
                    return true;
                }
            }
        }
        level = next;
    }
    false
}

/// The folders in `dir`, sorted, taking from `budget` one unit per entry listed.
fn subdirs(dir: &Path, budget: &mut usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let path = entry.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_the_folder_meant_one_level_up_or_down() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("LIDC-IDRI-slices");
        let nodule = root.join("LIDC-IDRI-0001/nodule-1");
        std::fs::create_dir_all(nodule.join("images")).unwrap();
        std::fs::create_dir_all(d.path().join("other")).unwrap();
        let cases = [
            (d.path().to_path_buf(), "holds the tree", root.clone()),
            (root.join("LIDC-IDRI-0001"), "patient folder", root.clone()),
            (nodule.clone(), "nodule folder", root.clone()),
            (nodule.join("images"), "images/ folder", root.clone()),
        ];
        for (input, what, meant) in cases {
            let (got_what, got_meant) = guess(&input).unwrap();
            assert!(got_what.contains(what), "{input:?}: {got_what}");
            assert_eq!(got_meant, meant, "{input:?}");
        }
        assert_eq!(guess(&d.path().join("other")), None);
        assert_eq!(
            guess(&root),
            None,
            "the root itself (with no slices) guesses nothing"
        );
    }

    #[test]
    fn a_tcia_download_is_recognised_by_its_dicom_files() {
        let d = tempfile::tempdir().unwrap();
        assert!(!holds_dicom(d.path()));
        let series = d.path().join("LIDC-IDRI-0001/study/series");
        std::fs::create_dir_all(&series).unwrap();
        std::fs::write(series.join("1-001.dcm"), b"x").unwrap();
        assert!(holds_dicom(d.path()));
    }
}
