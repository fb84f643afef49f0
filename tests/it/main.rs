//! Integration tests: they drive the real `lungseg` binary on generated trees.

mod common;
mod eval;
mod export;
mod prepare;
mod reliability;
mod report;
mod split;
mod train;
