//! The files of a TCIA download: every regular file below the input (and below `--xml-root`),
//! sorted, with links followed once and loops, broken links and special files rejected.

use crate::prepare::reject::{Reject, RejectReason, TreePlace};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A file found below a root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FoundFile {
    /// The path to open.
    pub path: PathBuf,
    /// The path shown in tables and messages: relative to the input root, or
    /// `<xml-root>/...` for files below `--xml-root`.
    pub shown: String,
    /// The top folder below the root (the patient folder in the TCIA layout), when any.
    pub top: Option<String>,
    /// Size in bytes.
    pub len: u64,
}

impl FoundFile {
    /// Whether the name ends in `.xml` (any case).
    pub fn is_xml(&self) -> bool {
        self.path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
    }

    /// Whether the name ends in `.dcm` (any case).
    pub fn is_dcm(&self) -> bool {
        self.path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
    }

    /// The place of a reject about this file.
    pub fn place(&self) -> TreePlace {
        TreePlace {
            patient_id: self.top.clone(),
            nodule_id: None,
            slice_name: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
        }
    }
}

/// Lists the regular files below `root`, sorted by shown path; `label` prefixes the shown paths
/// (empty for the input root). Unusable entries become rejects.
pub fn list_files(root: &Path, label: &str) -> (Vec<FoundFile>, Vec<Reject>) {
    let mut files = Vec::new();
    let mut rejects = Vec::new();
    let mut seen_dirs = HashSet::new();
    if let Ok(canonical) = std::fs::canonicalize(root) {
        seen_dirs.insert(canonical);
    }
    let mut stack = vec![(root.to_path_buf(), String::new(), None::<String>)];
    while let Some((dir, rel, top)) = stack.pop() {
        let shown_of = |name: &str| match (label.is_empty(), rel.is_empty()) {
            (true, true) => name.to_string(),
            (true, false) => format!("{rel}/{name}"),
            (false, true) => format!("{label}/{name}"),
            (false, false) => format!("{label}/{rel}/{name}"),
        };
        let here = [label, rel.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let unreadable = |detail: String| {
            Reject::unlogged(
                here.clone(),
                TreePlace {
                    patient_id: top.clone(),
                    ..TreePlace::default()
                },
                RejectReason::UnreadableDir,
                detail,
            )
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                rejects.push(unreadable(format!("cannot list folder: {e}")));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    rejects.push(unreadable(format!("an entry could not be read: {e}")));
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let shown = shown_of(&name);
            let top = top.clone().or_else(|| Some(name.clone()));
            let reject = |reason, detail: String| {
                Reject::unlogged(
                    shown.clone(),
                    TreePlace {
                        patient_id: top.clone(),
                        ..TreePlace::default()
                    },
                    reason,
                    detail,
                )
            };
            // Follows links: a link to a file is that file, a link to a folder that folder.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let link = entry.file_type().is_ok_and(|t| t.is_symlink());
                    rejects.push(match link {
                        true => reject(RejectReason::BrokenLink, format!("broken link: {e}")),
                        false => reject(RejectReason::IoError, e.to_string()),
                    });
                    continue;
                }
            };
            if meta.is_dir() {
                let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                if !seen_dirs.insert(canonical) {
                    rejects.push(reject(
                        RejectReason::SymlinkLoop,
                        "a link back to a folder already read; not followed".into(),
                    ));
                    continue;
                }
                let rel = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((path, rel, top));
            } else if meta.is_file() {
                files.push(FoundFile {
                    path,
                    shown,
                    top: if rel.is_empty() { None } else { top },
                    len: meta.len(),
                });
            } else {
                rejects.push(reject(
                    RejectReason::NotARegularFile,
                    format!(
                        "{}, not a regular file; not read",
                        crate::pixels::file_bytes::file_kind(&meta.file_type())
                    ),
                ));
            }
        }
    }
    files.sort();
    rejects.sort_by(|a, b| a.path.cmp(&b.path));
    (files, rejects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_nested_files_with_their_top_folder_and_rejects_loops() {
        let dir = tempfile::tempdir().unwrap();
        let series = dir.path().join("LIDC-IDRI-0001/study/series");
        std::fs::create_dir_all(&series).unwrap();
        std::fs::write(series.join("1.dcm"), b"x").unwrap();
        std::fs::write(series.join("069.xml"), b"<a/>").unwrap();
        std::fs::write(dir.path().join("README.txt"), b"hi").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("..", series.join("loop")).unwrap();
        let (files, rejects) = list_files(dir.path(), "");
        let shown: Vec<_> = files.iter().map(|f| f.shown.as_str()).collect();
        assert_eq!(
            shown,
            [
                "LIDC-IDRI-0001/study/series/069.xml",
                "LIDC-IDRI-0001/study/series/1.dcm",
                "README.txt"
            ]
        );
        assert_eq!(files[0].top.as_deref(), Some("LIDC-IDRI-0001"));
        assert!(files[0].is_xml() && files[1].is_dcm());
        assert_eq!(files[2].top, None);
        #[cfg(unix)]
        {
            assert_eq!(rejects.len(), 1);
            assert_eq!(rejects[0].reason, RejectReason::SymlinkLoop);
            assert_eq!(rejects[0].path, "LIDC-IDRI-0001/study/series/loop");
        }
        let (xml, _) = list_files(&series, "xml-root");
        assert_eq!(xml[0].shown, "xml-root/069.xml");
    }
}
