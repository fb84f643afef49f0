//! The one place that knows the fixed file names through which stages talk.

use std::path::{Path, PathBuf};

/// A prepared data directory: shards, manifest, rejects, split tables.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `shards/`: the Parquet slice shards.
    pub fn shards_dir(&self) -> PathBuf {
        self.root.join("shards")
    }

    /// The file name of shard number `index` (`slices-00000.parquet`).
    pub fn shard_name(index: usize) -> String {
        format!("slices-{index:05}.parquet")
    }

    /// The path of a shard given its file name as stored in the manifest.
    pub fn shard_path(&self, name: &str) -> PathBuf {
        self.shards_dir().join(name)
    }

    /// `manifest.parquet`: one row per kept slice, no pixel data.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.parquet")
    }

    /// `rejects.parquet`: one row per unusable file or folder.
    pub fn rejects(&self) -> PathBuf {
        self.root.join("rejects.parquet")
    }

    /// `nodules.parquet`: one row per nodule (a cluster of readers' outlines) of a TCIA source;
    /// absent for the PNG slice tree.
    pub fn nodules(&self) -> PathBuf {
        self.root.join("nodules.parquet")
    }

    /// `prepare.json`: the resolved config and counts, written last.
    pub fn prepare_record(&self) -> PathBuf {
        self.root.join("prepare.json")
    }

    /// `split.parquet`: one row per patient with its split and fold.
    pub fn split_table(&self) -> PathBuf {
        self.root.join("split.parquet")
    }

    /// `train.parquet`: the slice index the trainer reads for training.
    pub fn train_index(&self) -> PathBuf {
        self.root.join("train.parquet")
    }

    /// `val.parquet`: the slice index the trainer reads for validation.
    pub fn val_index(&self) -> PathBuf {
        self.root.join("val.parquet")
    }

    /// `split.json`: the resolved split config and achieved ratios, written last.
    pub fn split_record(&self) -> PathBuf {
        self.root.join("split.json")
    }

    /// Every output of `prepare`, for cleaning an incomplete directory.
    pub fn prepare_outputs(&self) -> Vec<PathBuf> {
        vec![
            self.shards_dir(),
            self.manifest(),
            self.rejects(),
            self.nodules(),
            self.prepare_record(),
        ]
    }

    /// Every output of `split`.
    pub fn split_outputs(&self) -> Vec<PathBuf> {
        vec![
            self.split_table(),
            self.train_index(),
            self.val_index(),
            self.split_record(),
        ]
    }
}

/// A training run directory: config, epoch table, checkpoints, evaluation.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`: resolved training config, data fingerprint, device, seed.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `epochs.parquet`: one row per finished epoch.
    pub fn epochs(&self) -> PathBuf {
        self.root.join("epochs.parquet")
    }

    /// `best.safetensors`: weights of the best epoch by the monitor.
    pub fn best_checkpoint(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }

    /// `last.safetensors`: weights after the last finished epoch.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.root.join("last.safetensors")
    }

    /// `last.optim.safetensors`: optimizer moments for `--resume`.
    pub fn last_optimizer(&self) -> PathBuf {
        self.root.join("last.optim.safetensors")
    }

    /// `train_state.json`: the loop state (epoch, stopper, RNG) for `--resume`.
    pub fn train_state(&self) -> PathBuf {
        self.root.join("train_state.json")
    }

    /// `train.log`: what training printed, ending with the commands to run next.
    pub fn train_log(&self) -> PathBuf {
        self.root.join("train.log")
    }

    /// `eval/`: outputs of the `eval` stage.
    pub fn eval_dir(&self) -> PathBuf {
        self.root.join("eval")
    }

    /// Name of `eval/summary.json`, written last.
    pub const EVAL_SUMMARY: &'static str = "summary.json";
    /// Name of `eval/per_slice.parquet`.
    pub const EVAL_PER_SLICE: &'static str = "per_slice.parquet";
    /// Name of `eval/thresholds.parquet`.
    pub const EVAL_THRESHOLDS: &'static str = "thresholds.parquet";
    /// Name of `eval/overlays/`.
    pub const EVAL_OVERLAYS: &'static str = "overlays";

    /// `eval/summary.json`: pooled, lesion- and nodule-level results; its presence marks a
    /// complete evaluation.
    pub fn eval_summary(&self) -> PathBuf {
        self.eval_dir().join(Self::EVAL_SUMMARY)
    }

    /// `eval/per_slice.parquet`: one row per evaluated slice.
    pub fn eval_per_slice(&self) -> PathBuf {
        self.eval_dir().join(Self::EVAL_PER_SLICE)
    }

    /// `eval/thresholds.parquet`: the threshold sweep.
    pub fn eval_thresholds(&self) -> PathBuf {
        self.eval_dir().join(Self::EVAL_THRESHOLDS)
    }

    /// `eval/overlays/`: overlay PNGs.
    pub fn eval_overlays(&self) -> PathBuf {
        self.eval_dir().join(Self::EVAL_OVERLAYS)
    }
}

/// The temporary name an output is written under before it is renamed into place.
pub fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_and_shards_sort_lexically() {
        let d = DataDir::new("/x");
        assert_eq!(d.manifest(), Path::new("/x/manifest.parquet"));
        assert_eq!(DataDir::shard_name(3), "slices-00003.parquet");
        assert!(DataDir::shard_name(9) < DataDir::shard_name(10));
        assert_eq!(
            temporary_name(Path::new("/x/a.parquet")),
            Path::new("/x/a.parquet.tmp")
        );
    }
}
