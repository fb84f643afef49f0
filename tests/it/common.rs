//! Shared helpers: a temp-dir sandbox, running the binary, writing PNGs, reading shards back.

#![allow(dead_code)]

use arrow_array::{Array, BinaryArray, Int32Array, Int64Array, StringArray};
pub use lungseg::schema::Table;
use lungseg::table::{column, read_table};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory that is removed when the test ends.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// The result of one `lungseg` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the captured output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self) -> Self {
        self.expect_code(0)
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lungseg")
}

/// Runs `lungseg` with `args`, quietly unless the test sets other flags.
pub fn lungseg<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    lungseg_with_env(args, &[])
}

/// [`lungseg`] with extra environment variables.
pub fn lungseg_with_env<I, S>(args: I, env: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out: Output = Command::new(bin())
        .args(args)
        .env_remove("LUNGSEG_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("spawn lungseg");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ensure_parent(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
}

pub fn write_gray8(path: &Path, width: u32, height: u32, data: Vec<u8>) {
    ensure_parent(path);
    image::GrayImage::from_raw(width, height, data)
        .unwrap()
        .save(path)
        .unwrap();
}

pub fn write_gray16(path: &Path, width: u32, height: u32, data: Vec<u16>) {
    ensure_parent(path);
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(width, height, data)
        .unwrap()
        .save(path)
        .unwrap();
}

pub fn write_rgb8(path: &Path, width: u32, height: u32, data: Vec<u8>) {
    ensure_parent(path);
    image::RgbImage::from_raw(width, height, data)
        .unwrap()
        .save(path)
        .unwrap();
}

/// One shard row, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRow {
    pub slice_id: String,
    pub patient_id: String,
    pub height: i32,
    pub width: i32,
    pub source_bits: i32,
    pub image: Vec<f32>,
    pub mask: Vec<u8>,
    pub rater_bits: Vec<u8>,
    pub raters_present: i32,
    pub mask_pixels: i64,
    pub slice_index: Option<i32>,
}

/// Every row of every shard under `data/shards`, in file and row order.
pub fn read_shards(data: &Path) -> Vec<ShardRow> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let spec = Table::Slices.spec();
    let mut rows = Vec::new();
    for f in files {
        for b in read_table(&f, &spec).unwrap() {
            let s = |n| column::<StringArray>(&b, n, &f).unwrap();
            let i = |n| column::<Int32Array>(&b, n, &f).unwrap();
            let bin = |n| column::<BinaryArray>(&b, n, &f).unwrap();
            let idx = i("slice_index");
            for r in 0..b.num_rows() {
                rows.push(ShardRow {
                    slice_id: s("slice_id").value(r).to_string(),
                    patient_id: s("patient_id").value(r).to_string(),
                    height: i("height").value(r),
                    width: i("width").value(r),
                    source_bits: i("source_bits").value(r),
                    image: bin("image")
                        .value(r)
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    mask: bin("mask").value(r).to_vec(),
                    rater_bits: bin("rater_bits").value(r).to_vec(),
                    raters_present: i("raters_present").value(r),
                    mask_pixels: column::<Int64Array>(&b, "mask_pixels", &f)
                        .unwrap()
                        .value(r),
                    slice_index: idx.is_valid(r).then(|| idx.value(r)),
                });
            }
        }
    }
    rows
}

/// (path, reason) of every reject, sorted.
pub fn read_rejects(data: &Path) -> Vec<(String, String, Option<String>)> {
    let p = data.join("rejects.parquet");
    let mut out = Vec::new();
    for b in read_table(&p, &Table::Rejects.spec()).unwrap() {
        let path = column::<StringArray>(&b, "path", &p).unwrap();
        let reason = column::<StringArray>(&b, "reason", &p).unwrap();
        let patient = column::<StringArray>(&b, "patient_id", &p).unwrap();
        for r in 0..b.num_rows() {
            out.push((
                path.value(r).to_string(),
                reason.value(r).to_string(),
                patient.is_valid(r).then(|| patient.value(r).to_string()),
            ));
        }
    }
    out.sort();
    out
}

/// The string column `name` of a small table.
pub fn strings(path: &Path, table: Table, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in read_table(path, &table.spec()).unwrap() {
        let c = column::<StringArray>(&b, name, path).unwrap();
        out.extend((0..b.num_rows()).map(|r| c.value(r).to_string()));
    }
    out
}

/// Whether python3 can import every module. Under CI (`LUNGSEG_REQUIRE_PYTHON=1`) a missing
/// module is a failure, not a skip.
pub fn python_has(modules: &[&str]) -> bool {
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = Command::new("python3")
        .args(["-c", &code])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok && std::env::var("LUNGSEG_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("python3 cannot import {modules:?}; run scripts/ensure-python-deps.sh");
    }
    if !ok {
        eprintln!("skipping: python3 cannot import {modules:?}");
    }
    ok
}

/// Runs a script from `scripts/` with python3 and returns its output, panicking on failure.
pub fn python_script(script: &str, args: &[&Path]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates a synthetic tree with the binary.
pub fn synth(out: &Path, patients: usize, seed: u64, extra: &[&str]) {
    let mut args: Vec<String> = vec![
        "synth".into(),
        "--out".into(),
        out.display().to_string(),
        "--patients".into(),
        patients.to_string(),
        "--seed".into(),
        seed.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    lungseg(&args).ok();
}

/// Runs prepare and expects success.
pub fn prepare(input: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec![
        "prepare".into(),
        "--input".into(),
        input.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    lungseg(&args).ok()
}

/// Every file under `dir` with its bytes, for whole-directory comparisons.
pub fn tree_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A prepared and split synthetic data directory at `sb/data` (tree at `sb/tree`).
pub fn dataset(sb: &Sandbox, patients: usize, seed: u64, split_args: &[&str]) -> PathBuf {
    let tree = sb.path("tree");
    synth(&tree, patients, seed, &[]);
    let data = sb.path("data");
    prepare(&tree, &data, &[]);
    let mut args = vec!["-q", "split", "--data", data.to_str().unwrap()];
    args.extend_from_slice(split_args);
    lungseg(&args).ok();
    data
}

/// A fast training configuration: a width-4 U-Net on 32x32 patches on CPU.
pub const TINY: &[&str] = &[
    "--device",
    "cpu",
    "--base-channels",
    "4",
    "--patch",
    "32",
    "--fg-crop",
    "0.9",
    "--lr",
    "3e-3",
    "--batch-size",
    "4",
];

/// Runs `lungseg train` with [`TINY`] plus `extra` (later flags win where they repeat).
pub fn train_tiny(data: &Path, run: &Path, extra: &[&str]) -> Run {
    train_tiny_with_env(data, run, extra, &[])
}

/// [`train_tiny`] with extra environment variables.
pub fn train_tiny_with_env(data: &Path, run: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--data".into(),
        data.display().to_string(),
        "--run".into(),
        run.display().to_string(),
    ];
    args.extend(TINY.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    lungseg_with_env(&args, env)
}

/// Resource limits for one child `lungseg`, set in the child only (`setrlimit` between fork
/// and exec), so that the test process itself is never limited.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// `RLIMIT_AS`: bytes of address space.
    pub address_space: Option<u64>,
    /// `RLIMIT_FSIZE`: the largest file it may write, in bytes. `SIGXFSZ` is ignored, so a
    /// longer write fails with `EFBIG` like a full disk instead of killing the process.
    pub file_size: Option<u64>,
    /// Killed after this long, so that a hang fails the test instead of stalling the run.
    pub timeout: Option<std::time::Duration>,
}

/// A limited run: its output, its peak resident memory and whether it was killed for time.
pub struct Measured {
    pub run: Run,
    pub max_rss_kib: i64,
    pub timed_out: bool,
}

/// Runs `lungseg` with `args` under `limits` (and two worker threads, so that address-space
/// needs do not grow with the machine's cores), and measures its peak RSS.
pub fn lungseg_limited<I, S>(args: I, limits: Limits) -> Measured
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("LUNGSEG_LOG")
        .env("RAYON_NUM_THREADS", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(bytes) = limits.address_space {
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(bytes) = limits.file_size {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn lungseg");
    let pid = child.id() as libc::pid_t;
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = limits.timeout.map(|t| {
        std::thread::spawn(move || {
            let fired = done_rx.recv_timeout(t).is_err();
            if fired {
                // SAFETY: the child has not been reaped yet (wait4 below is what reaps it).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            fired
        })
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child; `status` and `usage` are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    let _ = done_tx.send(());
    let timed_out = watchdog.map(|w| w.join().unwrap()).unwrap_or(false);
    std::mem::forget(child); // reaped above
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Measured {
        run: Run {
            code,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        max_rss_kib: usage.ru_maxrss,
        timed_out,
    }
}

/// A PNG of a few hundred bytes whose header declares `width`x`height` pixels of colour type
/// `colour` (0 gray, 2 RGB, 6 RGBA) at `depth` bits: image data for one pixel row at most, and
/// checksums that hold, the header of a decompression bomb.
pub fn bomb_png(width: u32, height: u32, colour: u8, depth: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream of 256 zero bytes (a filter byte and the start of the first row).
    chunk(&mut out, b"IDAT", &fdeflate::compress_to_vec(&[0u8; 256]));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    ensure_parent(path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {path:?}"
    );
}

/// Every file under `dir` whose name ends in `.tmp` (none when `dir` is gone).
pub fn temporaries(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    tree_bytes(dir)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// A run trained for two steps of one epoch on a three-patient synthetic tree under `sb`, with
/// the width-4 U-Net of [`TINY`] (the precision guard off, so `best.safetensors` exists): a
/// checkpoint for `predict`, not a model.
pub fn two_step_run(sb: &Sandbox) -> PathBuf {
    let data = dataset(sb, 3, 9, &[]);
    let run = sb.path("run");
    let steps = ["--max-epochs", "1", "--max-steps-per-epoch", "2"];
    train_tiny(
        &data,
        &run,
        &[&steps[..], &["--min-precision", "0"]].concat(),
    )
    .ok();
    run
}

/// `lungseg predict --device cpu --run RUN --input INPUT --out OUT` plus `extra`.
pub fn predict_args(run: &Path, input: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["predict", "--device", "cpu", "--run"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (flag, path) in [("", run), ("--input", input), ("--out", out)] {
        if !flag.is_empty() {
            args.push(flag.into());
        }
        args.push(path.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}
