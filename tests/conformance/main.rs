//! Conformance with Go's runtime, without Go: the interpreter of `interp.rs` must print, for every
//! script in `tests/conformance/`, the transcript Go's `context` package printed for it
//! (`NAME.golden`). See `tests/conformance/README.md`.
//!
//! One script of your own, its transcript printed (and checked against the `.golden` beside it,
//! if there is one):
//!
//! ```text
//! TETHER_GO_SCRIPT=path/to/NAME.script cargo test --release --test conformance -- --nocapture
//! ```

mod interp;

use std::path::{Path, PathBuf};

/// Exit status of a run that left the timing model (the machine was too slow): run it again.
const LATE: u8 = 3;
/// Runs of one script before a late run counts as a failure.
const ATTEMPTS: usize = 4;
/// Scripts run at the same time.
const PARALLEL: usize = 8;
/// Names one script to run instead of the corpus.
const ONE_SCRIPT: &str = "TETHER_GO_SCRIPT";

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the corpus directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "script"))
        .collect();
    scripts.sort();
    scripts
}

/// Runs `script`; returns the exit status, the transcript and the diagnostics.
fn run(script: &str) -> (u8, String, String) {
    let (mut out, mut diag) = (Vec::new(), Vec::new());
    let status = interp::interpret(script.as_bytes(), &mut out, &mut diag);
    (status, String::from_utf8(out).expect("UTF-8"), String::from_utf8(diag).expect("UTF-8"))
}

/// Checks one script against its golden transcript; `Err` describes the mismatch.
fn check(path: &Path) -> Result<usize, String> {
    let script = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let golden =
        std::fs::read_to_string(path.with_extension("golden")).map_err(|e| format!("no golden: {e}"))?;
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    for attempt in 1..=ATTEMPTS {
        let (status, out, diag) = run(&script);
        // A late run (the machine was slow) that still prints Go's transcript passes; one that
        // differs proves nothing, so it is run again.
        match status {
            0 | LATE if out == golden => return Ok(attempt),
            LATE => {}
            0 => {
                let (line, (want, got)) = golden
                    .lines()
                    .zip(out.lines())
                    .enumerate()
                    .find(|(_, (a, b))| a != b)
                    .unwrap_or((golden.lines().count().min(out.lines().count()), ("<end>", "<end>")));
                return Err(format!("{name}: line {}: want\n  {want}\ngot\n  {got}", line + 1));
            }
            _ => return Err(format!("{name}: exit status {status}: {diag}")),
        }
    }
    Err(format!("{name}: {ATTEMPTS} late runs (the machine is too loaded), none with Go's transcript"))
}

/// Runs the script [`ONE_SCRIPT`] names: prints its transcript and diagnostics, and checks it
/// against its golden transcript if it has one.
fn one_script(path: &Path) {
    let script = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (status, out, diag) = run(&script);
    print!("{out}");
    eprint!("{diag}");
    if path.with_extension("golden").exists() {
        check(path).unwrap_or_else(|e| panic!("{e}"));
    } else {
        assert!(status == 0 || status == LATE, "exit status {status}");
    }
}

#[test]
fn every_corpus_script_prints_the_transcript_go_printed() {
    if let Some(path) = std::env::var_os(ONE_SCRIPT) {
        return one_script(Path::new(&path));
    }
    let scripts = corpus();
    assert!(scripts.len() >= 20, "the corpus is missing: {} scripts", scripts.len());
    // The scripts mostly sleep (in virtual time): run several at once, on `PARALLEL` workers.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Result<usize, String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = scripts.get(i) else { return done };
                        done.push((i, check(path)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("the interpreter does not panic")).collect()
    });
    let results: Vec<Result<usize, String>> = results.into_iter().map(|(_, r)| r).collect();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} of {} scripts differ from Go:\n{}", failures.len(), scripts.len(), {
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    });
}

#[test]
fn an_invalid_script_is_rejected_whole_with_status_2() {
    for script in [
        "background c0\nwith_cancel c1 nope\n",
        "background c0\nbackground c0\n",
        "background c0\ncancel c0\n",
        "background c0\nwith_cancel c1 c0\ncancel c1 E1\n",
        "background c0\nwith_value c1 c0 k=1 v\n",
        "sleep 600001\n",
        "frobnicate\n",
        "background c0\nafter_func a c0 cancel_cause c0\n",
        "background c0\nwith_cancel_cause c1 c0\ncancel c1 none\n",
    ] {
        let (status, out, diag) = run(script);
        assert_eq!(status, 2, "{script:?}");
        assert!(out.is_empty(), "nothing runs: {out:?}");
        assert!(diag.contains("line "), "the message names the line: {diag:?}");
    }
}
