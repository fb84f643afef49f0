//! Integration tests: they drive the real `lungseg` binary on generated trees.

mod common;
mod prepare;
mod report;
mod split;
mod train;
