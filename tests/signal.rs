//! `tether::signal`, in child processes: the test binary runs itself again with
//! `TETHER_SIGNAL_CHILD` naming a scenario, so that the signals hit that child, never the harness,
//! and the parent checks how the child ended (its status, the signal that killed it, its output).
//!
//! A plain `main` (`harness = false` in Cargo.toml): the libtest harness's own threads and
//! output capture have no business in a process that signals itself.

#[cfg(all(unix, feature = "signal"))]
mod scenarios {
    use signal_hook::low_level::raise;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, ExitStatus};
    use std::time::Duration;
    use tether::signal::{self, DumpTo, Notify, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SecondSignal, Signal};
    use tether::{Canceller, Cause, Context};

    const CHILD: &str = "TETHER_SIGNAL_CHILD";
    /// A child that has not ended by then has hung: it exits with [`HUNG`] instead.
    const CHILD_LIMIT: Duration = Duration::from_secs(20);
    const HUNG: i32 = 99;
    /// What a scenario that ran to its end exits with.
    const PASSED: i32 = 0;

    /// A scenario: its name, what the child runs, and how the parent judges the child's end.
    type Scenario = (&'static str, fn(), fn(ExitStatus, &str));

    /// The scenarios: each runs in its own child process, and `check` judges how it ended.
    pub(crate) const ALL: &[Scenario] = &[
        (
            "the_first_signal_cancels_with_a_cause_naming_it_and_its_sender",
            cause_names_the_signal,
            |status, out| {
                assert_eq!(status.code(), Some(PASSED), "{out}");
                assert!(out.contains(&format!("received SIGTERM (signal {SIGTERM}) from pid ")), "{out}");
            },
        ),
        ("a_second_sigint_exits_with_status_130_by_default", second_sigint_exits, |status, out| {
            assert_eq!(status.code(), Some(130), "{out}")
        }),
        (
            "a_second_signal_exits_with_the_chosen_status",
            second_signal_exits_with_chosen_status,
            |status, out| assert_eq!(status.code(), Some(7), "{out}"),
        ),
        (
            "a_second_signal_cancels_the_shielded_work_when_asked",
            second_signal_cancels_shield,
            |status, out| assert_eq!(status.code(), Some(PASSED), "{out}"),
        ),
        (
            "the_default_disposition_is_back_once_the_guard_drops",
            default_is_back_after_drop,
            |status, out| assert_eq!(status.signal(), Some(SIGTERM), "killed by SIGTERM: {out}"),
        ),
        ("two_guards_on_one_signal_are_both_cancelled", two_guards_both_fire, |status, out| {
            assert_eq!(status.code(), Some(PASSED), "{out}")
        }),
        (
            "a_signal_still_listened_for_by_another_guard_keeps_its_handler",
            one_guard_dropped_one_listening,
            |status, out| assert_eq!(status.code(), Some(PASSED), "{out}"),
        ),
        (
            "a_dump_on_sigquit_goes_to_stderr_naming_the_scope_and_the_childs_spawn_site",
            dump_to_stderr,
            |status, out| {
                assert_eq!(status.code(), Some(PASSED), "{out}");
                let line = out.lines().find_map(|l| l.strip_prefix("spawned at line ")).expect("the line");
                assert!(out.contains("\"stuck-service\""), "the scope's name: {out}");
                assert!(out.contains(&format!("spawned at {}:{line}:", file!())), "the spawn site: {out}");
            },
        ),
        (
            "the_dump_signal_has_its_default_disposition_back_once_the_guard_drops",
            dump_guard_dropped,
            |status, out| assert_eq!(status.signal(), Some(SIGUSR1), "killed by SIGUSR1: {out}"),
        ),
    ];

    /// In a child: runs the scenario its environment names, then exits with [`PASSED`] (a failed
    /// assertion panics, which exits with 101). Returns in the parent.
    pub(crate) fn run_child_scenario() {
        let Ok(name) = std::env::var(CHILD) else { return };
        // A scenario that hangs must not hang the suite.
        std::thread::spawn(|| {
            std::thread::sleep(CHILD_LIMIT);
            eprintln!("the scenario hung");
            std::process::exit(HUNG);
        });
        let (_, scenario, _) = ALL.iter().find(|(n, _, _)| *n == name).expect("a known scenario");
        scenario();
        std::process::exit(PASSED);
    }

    /// In the parent: runs `name` in a child process and returns how it ended and its output.
    pub(crate) fn spawn(name: &str) -> (ExitStatus, String) {
        let exe = std::env::current_exe().expect("the test binary's path");
        let output = Command::new(exe).env(CHILD, name).output().expect("run the child");
        let text =
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        (output.status, text)
    }

    fn signal_of(cause: &Cause) -> &Signal {
        cause.downcast_ref::<Signal>().expect("a signal cause")
    }

    fn cause_names_the_signal() {
        let guard = signal::notify(&Context::new(), &[SIGINT, SIGTERM]).unwrap();
        raise(SIGTERM).unwrap();
        let cause = guard.context().wait();
        let signal = signal_of(&cause);
        assert_eq!((signal.number(), signal.name()), (SIGTERM, Some("SIGTERM")));
        assert_eq!(signal.sender().map(|s| s.pid), Some(std::process::id() as i32));
        println!("{cause}");
    }

    fn second_sigint_exits() {
        let guard = signal::notify(&Context::new(), &[SIGINT]).unwrap();
        raise(SIGINT).unwrap();
        guard.context().wait();
        raise(SIGINT).unwrap();
        // The listening thread exits the process; this thread waits for it.
        std::thread::sleep(CHILD_LIMIT);
    }

    fn second_signal_exits_with_chosen_status() {
        let guard = Notify::new(&[SIGTERM]).second(SecondSignal::Exit(7)).start(&Context::new()).unwrap();
        raise(SIGTERM).unwrap();
        guard.context().wait();
        raise(SIGTERM).unwrap();
        std::thread::sleep(CHILD_LIMIT);
    }

    fn second_signal_cancels_shield() {
        let guard =
            Notify::new(&[SIGINT]).second(SecondSignal::CancelShielded).start(&Context::new()).unwrap();
        let job = guard.shield(guard.context());
        raise(SIGINT).unwrap();
        guard.context().wait();
        assert!(!job.is_cancelled(), "the first signal spares the shielded work");
        raise(SIGINT).unwrap();
        assert_eq!(signal_of(&job.wait()).number(), SIGINT);
    }

    fn default_is_back_after_drop() {
        let guard = signal::notify(&Context::new(), &[SIGTERM]).unwrap();
        let ctx = guard.context().clone();
        drop(guard);
        assert_eq!(ctx.cause(), Some(Cause::Cancelled), "the drop cancels, as Go's stop");
        raise(SIGTERM).unwrap();
        std::thread::sleep(CHILD_LIMIT);
    }

    fn two_guards_both_fire() {
        let first = signal::notify(&Context::new(), &[SIGUSR1]).unwrap();
        let second = signal::notify(&Context::new(), &[SIGUSR1]).unwrap();
        raise(SIGUSR1).unwrap();
        assert_eq!(signal_of(&first.context().wait()).number(), SIGUSR1);
        assert_eq!(signal_of(&second.context().wait()).number(), SIGUSR1);
    }

    fn one_guard_dropped_one_listening() {
        let dropped = signal::notify(&Context::new(), &[SIGUSR1]).unwrap();
        let listening = signal::notify(&Context::new(), &[SIGUSR1]).unwrap();
        drop(dropped);
        raise(SIGUSR1).unwrap();
        assert_eq!(signal_of(&listening.context().wait()).number(), SIGUSR1);
    }

    fn dump_to_stderr() {
        let dumps = signal::dump_on(SIGQUIT, DumpTo::Stderr).unwrap();
        tether::ScopeBuilder::new()
            .name("stuck-service")
            .run(|s| {
                println!("spawned at line {}", line!() + 1);
                s.spawn(|ctx| ctx.wait());
                raise(SIGQUIT).unwrap();
                while dumps.written() == 0 {
                    std::thread::yield_now();
                }
            })
            .unwrap();
    }

    fn dump_guard_dropped() {
        drop(signal::dump_on(SIGUSR1, DumpTo::Stderr).unwrap());
        raise(SIGUSR1).unwrap();
        std::thread::sleep(CHILD_LIMIT);
    }
}

#[cfg(all(unix, feature = "signal"))]
fn main() {
    scenarios::run_child_scenario();
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut ran = 0;
    for (name, _, check) in scenarios::ALL {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let (status, output) = scenarios::spawn(name);
        check(status, &output);
        println!("test {name} ... ok");
        ran += 1;
    }
    println!("\n{ran} signal scenarios passed");
}

#[cfg(not(all(unix, feature = "signal")))]
fn main() {}
