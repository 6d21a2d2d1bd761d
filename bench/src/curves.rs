//! Growth curves: how qm's cost grows with the work, next to the raw baseline's, as small
//! tables and `results.jsonl` lines (`"curve": …`). Figures, not verdicts: no target.
//!
//! A curve runs one subject metric at several sizes (one subject run per size), so each point
//! compares qm and raw in the same process at the same moment, as every metric does.

use std::io::Write;
use std::path::Path;

use serde_json::json;

pub struct Curve {
    /// The name `--only` selects and the JSONL's `"curve"`.
    pub name: &'static str,
    /// The subject metric run at each point.
    metric: &'static str,
    /// The parameter that grows, and its values (full run, `--quick`).
    param: &'static str,
    points: &'static [usize],
    quick_points: &'static [usize],
    /// The other parameters: (key, full, quick).
    fixed: &'static [(&'static str, usize, usize)],
    /// Divide each sample by the point's size (per-machine costs).
    per_unit: bool,
    unit: &'static str,
    x_unit: &'static str,
    title: &'static str,
    /// Memory one point needs per unit of size, to skip a point the machine cannot hold.
    bytes_per_unit: u64,
    /// A side measurement shown next to the main one (its `stat` name, its unit).
    stat: Option<(&'static str, &'static str)>,
}

pub const CURVES: &[Curve] = &[
    Curve {
        name: "scale_curve",
        metric: "scale",
        param: "machines",
        points: &[50, 100, 200, 400],
        quick_points: &[10, 20],
        fixed: &[("rounds", 2, 1)],
        per_unit: true,
        unit: "ms/VM",
        x_unit: "VMs",
        title: "scale: VMs launched at once until all answer QMP, then all shut down; wall time per VM",
        // QEMU -machine none under TCG: about 32 MiB resident each (VmRSS, shared pages
        // included), with margin.
        bytes_per_unit: 48 << 20,
        // The host's own CPU time per VM: what the spawn costs the host, much less sensitive
        // to other load on the machine than the wall time.
        stat: Some(("cpu_ms_per_machine", "cpu ms/VM")),
    },
    Curve {
        name: "qmp_threads_curve",
        metric: "qmp_threads",
        param: "threads",
        points: &[1, 2, 4, 8, 16, 64],
        quick_points: &[1, 8, 64],
        // reps: a multiple of 64 so that every thread count divides it.
        fixed: &[("segments", 6, 1), ("blocks", 2, 2), ("reps", 448, 128)],
        per_unit: false,
        unit: "cmd/s",
        x_unit: "threads",
        title: "qmp_threads: query-status from N threads on one machine (qm) vs the raw client's sequential rate; side: vs the raw client pipelining N commands",
        bytes_per_unit: 0,
        // Subjects that measure it (Rust, C, Go): the raw client with N commands in flight.
        stat: Some(("pipelined", "pipelined cmd/s")),
    },
];

pub fn known(name: &str) -> bool {
    CURVES.iter().any(|c| c.name == name)
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Many machines need more descriptors than the usual soft limit of 1024 (the C subject does
/// not raise it itself): raise it to the hard limit for the subjects run from here on.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain data in and out.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs every selected curve through every subject; returns the failed runs.
pub fn run(
    only: Option<&[String]>,
    subjects: &[(String, String)],
    quick: bool,
    qemu: &str,
    samples_dir: &Path,
    jsonl: &mut std::fs::File,
) -> Vec<String> {
    let mut failed = Vec::new();
    raise_fd_limit();
    for curve in CURVES {
        if only.is_some_and(|o| !o.iter().any(|n| n == curve.name)) {
            continue;
        }
        println!();
        println!("growth: {}", curve.title);
        let stat_head = curve.stat.map_or(String::new(), |(_, unit)| {
            format!("   {unit}: raw / qm / ratio")
        });
        println!(
            "{:<8} {:>8} {:>12} {:>12}  {:<8} {:>7} {:>9}{stat_head}",
            "subject", curve.x_unit, "raw", "qm", "unit", "ratio", "p25-p75"
        );
        let points = if quick {
            curve.quick_points
        } else {
            curve.points
        };
        for (subject, program) in subjects {
            for &x in points {
                let need = curve.bytes_per_unit * x as u64;
                if let Some(avail) = mem_available().filter(|&a| need > a) {
                    let why = format!(
                        "needs about {} MiB, {} MiB available",
                        need >> 20,
                        avail >> 20
                    );
                    println!("{subject:<8} {x:>8}  SKIPPED: {why}");
                    line(
                        jsonl,
                        json!({"curve": curve.name, "subject": subject, "x": x, "skipped": why}),
                    );
                    continue;
                }
                match point(curve, program, x, quick, qemu, samples_dir, subject) {
                    Ok(Err(why)) => {
                        // The subject has no meaningful run of this metric (it said so).
                        println!("{subject:<8} {x:>8}  SKIPPED: {why}");
                        line(
                            jsonl,
                            json!({"curve": curve.name, "subject": subject, "x": x, "skipped": why}),
                        );
                    }
                    Err(why) => {
                        println!("{subject:<8} {x:>8}  FAILED: {why}");
                        line(
                            jsonl,
                            json!({"curve": curve.name, "subject": subject, "x": x, "error": why}),
                        );
                        failed.push(format!("{}/{subject}/{x}", curve.name));
                    }
                    Ok(Ok((raw, qm, pairs, stat))) => {
                        // As in the main table: the median of the per-pair ratios when the
                        // subject marked pairs, else the ratio of the medians.
                        let ratio = pairs.map_or(qm / raw, |p| p.0);
                        let spread =
                            pairs.map_or(String::new(), |(_, lo, hi)| format!("{lo:.2}-{hi:.2}"));
                        let stat_text = stat.map_or(String::new(), |(r, q)| {
                            format!(
                                "   {} / {} / {:.3}",
                                super::fmt_value(r),
                                super::fmt_value(q),
                                q / r
                            )
                        });
                        println!(
                            "{subject:<8} {x:>8} {:>12} {:>12}  {:<8} {:>7.3} {:>9}{stat_text}",
                            super::fmt_value(raw),
                            super::fmt_value(qm),
                            curve.unit,
                            ratio,
                            spread
                        );
                        line(
                            jsonl,
                            json!({
                                "curve": curve.name, "subject": subject, "x": x,
                                "x_unit": curve.x_unit, "raw": super::num(raw, 3),
                                "qm": super::num(qm, 3), "unit": curve.unit,
                                "ratio_of_medians": super::num(qm / raw, 4),
                                "pair_ratio": pairs.map_or(json!(null), |p| super::num(p.0, 4)),
                                "stat": curve.stat.map(|(name, _)| name),
                                "stat_raw": stat.map_or(json!(null), |s| super::num(s.0, 3)),
                                "stat_qm": stat.map_or(json!(null), |s| super::num(s.1, 3)),
                            }),
                        );
                    }
                }
                let _ = std::io::stdout().flush();
            }
        }
    }
    failed
}

fn line(jsonl: &mut std::fs::File, value: serde_json::Value) {
    writeln!(jsonl, "{value}").expect("writing results.jsonl");
}

/// Medians of raw and qm, the paired ratio (median, p25, p75), the side measurement's medians.
type Point = (f64, f64, Option<(f64, f64, f64)>, Option<(f64, f64)>);

/// One subject run at size `x`: the medians of raw and qm (per unit if the curve says so), or
/// `Ok(Err(why))` when the subject skips the metric.
fn point(
    curve: &Curve,
    program: &str,
    x: usize,
    quick: bool,
    qemu: &str,
    samples_dir: &Path,
    subject: &str,
) -> Result<Result<Point, String>, String> {
    let mut args = vec![format!("{}={x}", curve.param)];
    args.extend(super::params(curve.fixed, quick));
    let keep = samples_dir.join(format!("{}.{x}.{subject}.txt", curve.name));
    let s = super::run_program(program, curve.metric, false, qemu, &args, &keep)?;
    if let Some(why) = s.skip {
        return Ok(Err(why));
    }
    if s.raw.is_empty() || s.subject.is_empty() {
        return Err("no samples".into());
    }
    let per = if curve.per_unit { x as f64 } else { 1.0 };
    let stat = match curve.stat {
        None => None,
        // A side measurement only some subjects make.
        Some((name, _)) => s
            .stats
            .get(name)
            .map(|(raw, qm)| (super::median(raw), super::median(qm))),
    };
    Ok(Ok((
        super::median(&s.raw) / per,
        super::median(&s.subject) / per,
        super::pair_ratios(&s.pairs),
        stat,
    )))
}
