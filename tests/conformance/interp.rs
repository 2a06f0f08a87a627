//! An interpreter for the context script language (`tests/conformance/SCRIPT.md`)
//! on `tether::go`: it prints the transcript Go's reference interpreter prints for the same script,
//! byte for byte. `parse.rs` checks a whole script before anything runs; `run.rs` runs it against
//! a virtual clock.
//!
//! Exit status: 0 transcript complete, 1 I/O error, 2 invalid script (nothing ran), 3 transcript
//! complete but the run left the timing model (it drifted more than 25 ms from the virtual clock,
//! or an op ran close to a pending deadline): re-run it.

mod parse;
mod run;

use parse::parse;
use run::Interp;
use std::io::{BufRead, Write};

/// Runs `script`, writing the transcript to `out` and diagnostics to `diag`; returns the exit
/// status (see the top of this file). `main.rs` calls this in-process.
pub fn interpret(script: impl BufRead, out: impl Write, mut diag: impl Write) -> u8 {
    let ops = match parse(script) {
        Ok(ops) => ops,
        Err(e) => {
            let _ = writeln!(diag, "interp: {e}");
            return 2;
        }
    };
    let mut interp = Interp::new(out);
    if let Err(e) = interp.run(&ops).and_then(|()| interp.out.flush()) {
        let _ = writeln!(diag, "interp: {e}");
        return 1;
    }
    if interp.late {
        let _ = writeln!(diag, "interp: the run left the timing model; re-run it");
        return 3;
    }
    0
}
