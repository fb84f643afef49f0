//! `lungseg-bench layers`: every CPU kernel of one fused training step, timed alone on the
//! U-Net's own layer shapes, so that each kernel's cost (and each change to it) can be measured
//! without the rest of the step.

use lungseg::model::cpu::adam::{adam_update, AdamStep};
use lungseg::model::cpu::bn_relu::{bn_relu_backward, bn_relu_train_forward, BnShape};
use lungseg::model::cpu::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, ConvShape, Epilogue,
};
use lungseg::model::cpu::pool::{max_pool2x2_backward, max_pool2x2_forward, PoolShape};
use lungseg::model::cpu::simd::Isa;
use lungseg::model::cpu::upsample::{upsample_cat_backward_low, upsample_cat_forward, UpCatShape};
use std::collections::BTreeMap;
use std::time::Instant;

/// CPU time of this process (all threads), in seconds.
pub fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// `(cpu, wall)` seconds of `f`, the minimum of each over `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let (mut cpu, mut wall) = (f64::MAX, f64::MAX);
    for _ in 0..reps.max(1) {
        let (c, t) = (cpu_seconds(), Instant::now());
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_seconds() - c);
    }
    (cpu, wall)
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + seed * 13) % 23) as f32 * 0.05 - 0.5)
        .collect()
}

/// Adds `(cpu, wall)` to the totals of `kind`.
fn add(totals: &mut BTreeMap<&'static str, (f64, f64)>, kind: &'static str, t: (f64, f64)) {
    let e = totals.entry(kind).or_insert((0.0, 0.0));
    e.0 += t.0;
    e.1 += t.1;
}

pub fn run(
    base: usize,
    batch: usize,
    size: usize,
    reps: usize,
) -> anyhow::Result<serde_json::Value> {
    let isa = Isa::best();
    let c = base;
    let mut totals = BTreeMap::new();
    // (c_in, c_out, size divisor, k) of the eleven convolutions in network order.
    let convs = [
        (1, c, 1, 3),
        (c, c, 1, 3),
        (c, 2 * c, 2, 3),
        (2 * c, 2 * c, 2, 3),
        (2 * c, 4 * c, 4, 3),
        (4 * c, 4 * c, 4, 3),
        (6 * c, 2 * c, 2, 3),
        (2 * c, 2 * c, 2, 3),
        (3 * c, c, 1, 3),
        (c, c, 1, 3),
        (c, 1, 1, 1),
    ];
    let mut per_conv = Vec::new();
    for (i, &(c_in, c_out, div, k)) in convs.iter().enumerate() {
        let s = ConvShape {
            batch,
            c_in,
            h: size / div,
            w: size / div,
            c_out,
            k,
            pad: k / 2,
        };
        let (x, w, b, gy) = (
            values(s.x_len(), 1),
            values(s.w_len(), 2),
            values(c_out, 3),
            values(s.y_len(), 4),
        );
        let (mut y, mut dx, mut dw, mut db) = (
            vec![0.0; s.y_len()],
            vec![0.0; s.x_len()],
            vec![0.0; s.w_len()],
            vec![0.0; c_out],
        );
        let fwd = time(reps, || {
            conv2d_forward(isa, &s, &x, &w, Epilogue::Bias(&b), &mut y)
        });
        // The first layer's input is the data: the step computes no gradient for it.
        let bx = if i == 0 {
            (0.0, 0.0)
        } else {
            time(reps, || conv2d_backward_input(isa, &s, &gy, &w, &mut dx))
        };
        let bw = time(reps, || {
            conv2d_backward_weight(isa, &s, &x, &gy, &mut dw, &mut db)
        });
        add(&mut totals, "conv_forward", fwd);
        add(&mut totals, "conv_grad_input", bx);
        add(&mut totals, "conv_grad_weight", bw);
        let gflop = 2.0 * (s.y_len() * c_in * k * k) as f64 / 1e9;
        per_conv.push(serde_json::json!({
            "layer": format!("{c_in}->{c_out} {}x{}", s.h, s.w),
            "forward_cpu_s": fwd.0, "grad_input_cpu_s": bx.0, "grad_weight_cpu_s": bw.0,
            "forward_gflop_per_cpu_s": gflop / fwd.0, "grad_weight_gflop_per_cpu_s": gflop / bw.0,
        }));
    }
    // Two batch-norms per block: (channels, size divisor).
    for (ch, div) in [(c, 1), (2 * c, 2), (4 * c, 4), (2 * c, 2), (c, 1)] {
        let s = BnShape {
            batch,
            channels: ch,
            plane: (size / div) * (size / div),
        };
        let n = batch * ch * s.plane;
        let (x, gz) = (values(n, 5), values(n, 6));
        let (g, b) = (vec![1.0; ch], vec![0.1; ch]);
        let (mut z, mut dx, mut dg, mut db) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; ch], vec![0.0; ch]);
        let stats = bn_relu_train_forward(isa, &s, &x, &g, &b, 1e-5, &mut z);
        for _ in 0..2 {
            add(
                &mut totals,
                "bn_relu_forward",
                time(reps, || {
                    bn_relu_train_forward(isa, &s, &x, &g, &b, 1e-5, &mut z);
                }),
            );
            add(
                &mut totals,
                "bn_relu_backward",
                time(reps, || {
                    bn_relu_backward(isa, &s, &x, &gz, &g, &b, &stats, &mut dx, &mut dg, &mut db)
                }),
            );
        }
    }
    for (ch, div) in [(c, 1), (2 * c, 2)] {
        let s = PoolShape {
            planes: batch * ch,
            h: size / div,
            w: size / div,
        };
        let x = values(s.planes * s.h * s.w, 7);
        let gy = values(s.planes * s.h_out() * s.w_out(), 8);
        let (mut y, mut dx) = (vec![0.0; gy.len()], vec![0.0; x.len()]);
        add(
            &mut totals,
            "pool_forward",
            time(reps, || max_pool2x2_forward(&s, &x, &mut y)),
        );
        add(
            &mut totals,
            "pool_backward",
            time(reps, || max_pool2x2_backward(&s, &x, &gy, &mut dx)),
        );
    }
    for (c_low, c_skip, div) in [(4 * c, 2 * c, 4), (2 * c, c, 2)] {
        let s = UpCatShape {
            batch,
            c_low,
            c_skip,
            h: size / div,
            w: size / div,
        };
        let low = values(batch * c_low * s.h * s.w, 9);
        let skip = values(batch * c_skip * 4 * s.h * s.w, 10);
        let (mut out, mut d_low) = (vec![0.0; s.out_len()], vec![0.0; low.len()]);
        add(
            &mut totals,
            "upsample_cat_forward",
            time(reps, || upsample_cat_forward(&s, &low, &skip, &mut out)),
        );
        add(
            &mut totals,
            "upsample_cat_backward",
            time(reps, || upsample_cat_backward_low(&s, &out, &mut d_low)),
        );
    }
    let params: usize = convs
        .iter()
        .map(|&(i, o, _, k)| o * i * k * k + o)
        .sum::<usize>()
        + 4 * (c + 2 * c + 4 * c + 2 * c + c);
    let (mut theta, mut m, mut v, g) = (
        values(params, 11),
        vec![0.0; params],
        vec![0.0; params],
        values(params, 12),
    );
    let step = AdamStep::new(1e-4, 0.9, 0.999, 1e-8, 0.0, 1);
    add(
        &mut totals,
        "adam",
        time(reps, || adam_update(&step, &mut theta, &mut m, &mut v, &g)),
    );
    let total_cpu: f64 = totals.values().map(|t| t.0).sum();
    let kinds: serde_json::Map<String, serde_json::Value> = totals
        .iter()
        .map(|(k, (cpu, wall))| {
            (
                k.to_string(),
                serde_json::json!({"cpu_s": cpu, "wall_s": wall}),
            )
        })
        .collect();
    Ok(serde_json::json!({
        "what": "layers", "isa": format!("{isa:?}"), "threads": rayon::current_num_threads(),
        "base": base, "batch": batch, "size": size, "reps": reps,
        "total_cpu_s": total_cpu, "kernels": kinds, "convolutions": per_conv,
    }))
}
