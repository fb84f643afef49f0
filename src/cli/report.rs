//! `lungseg report` arguments.

use clap::Args;
use std::path::PathBuf;

/// `lungseg report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Folder holding run directories (each with epochs.parquet, maybe eval/).
    #[arg(long, value_name = "DIR")]
    pub runs: PathBuf,
    /// Where report.md and the charts go [default: RUNS/report].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl ReportArgs {
    /// The validated config.
    pub fn resolve(&self) -> crate::report::ReportConfig {
        crate::report::ReportConfig {
            runs: self.runs.clone(),
            out: self.out.clone().unwrap_or_else(|| self.runs.join("report")),
        }
    }
}
