//! `step` driven with event sequences, without any process: every edge of the transition
//! table, the restart policy, and the six cases of issue 14.

use super::machine::*;
use crate::config::{ShutdownMode, Supervision};
use crate::instance::status::State::{self, *};
use crate::postmaster::escalation;
use crate::supervisor::reconcile::Timing;
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

fn policy() -> Policy {
    Policy {
        supervision: Supervision::default(),
        shutdown_timeout: Duration::from_secs(30),
    }
}

fn machine() -> Machine {
    let mut m = Machine::new(policy());
    m.start();
    m
}

const PID: i32 = 100;

fn killed(signal: Signal, by_us: bool, at: Instant) -> Event {
    Event::Exited(ExitReport {
        pid: PID,
        status: ExitStatus::from_raw(signal as i32),
        signalled_by_us: by_us,
        oom_killed: false,
        memory_limit: String::new(),
        explanation: Some(
            "t [100] postmaster LOG:  database system is ready to accept connections".into(),
        ),
        at,
        at_ms: 1,
    })
}

fn exited_code(code: i32, explanation: &str, at: Instant) -> Event {
    Event::Exited(ExitReport {
        pid: PID,
        status: ExitStatus::from_raw(code << 8),
        signalled_by_us: false,
        oom_killed: false,
        memory_limit: String::new(),
        explanation: Some(explanation.into()),
        at,
        at_ms: 1,
    })
}

/// Runs events, returning every action.
fn run(m: &mut Machine, events: Vec<Event>) -> Vec<Action> {
    events.into_iter().flat_map(|e| step(m, e)).collect()
}

/// A machine whose first server is spawned (state Starting).
fn starting(timing: Timing) -> Machine {
    let mut m = machine();
    run(
        &mut m,
        vec![
            Event::Installed {
                version: "16.14.0".into(),
            },
            Event::Initialised {
                created: false,
                reconcile: timing,
            },
            Event::Spawned { pid: PID },
        ],
    );
    assert_eq!(m.state(), Starting);
    m
}

fn ready() -> Machine {
    let mut m = starting(Timing::Skip);
    run(&mut m, vec![Event::Accepting]);
    assert_eq!(m.state(), Ready);
    m
}

fn has(actions: &[Action], wanted: &Action) -> bool {
    actions.contains(wanted)
}

fn notices(actions: &[Action]) -> Vec<Notice> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(Notice::Status(_)) => None,
            Action::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

fn backoff(actions: &[Action]) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::Arm(Timer::Backoff, d) => Some(*d),
        _ => None,
    })
}

fn finish(actions: &[Action]) -> Option<Finish> {
    actions.iter().find_map(|a| match a {
        Action::Finish(f) => Some(f.clone()),
        _ => None,
    })
}

// ---- every edge of the table ----

/// Drives a machine into `from` and then along the edge to `to`; returns the actions of the edge.
fn drive(from: State, to: State) -> (Machine, Vec<Action>) {
    let now = Instant::now();
    let mut m = match from {
        Installing => machine(),
        Initialising => {
            let mut m = machine();
            run(
                &mut m,
                vec![Event::Installed {
                    version: "16".into(),
                }],
            );
            m
        }
        Starting => starting(Timing::Skip),
        Ready => ready(),
        Restarting => {
            let mut m = ready();
            run(&mut m, vec![killed(Signal::SIGKILL, false, now)]);
            m
        }
        Stopping => {
            let mut m = ready();
            run(&mut m, vec![Event::Stop(ShutdownMode::Fast)]);
            m
        }
        Stopped => unreachable!("no edge leaves Stopped"),
    };
    assert_eq!(m.state(), from);
    let event = match (from, to) {
        (Installing, Initialising) => Event::Installed {
            version: "16".into(),
        },
        (Installing, Stopped) => Event::Stop(ShutdownMode::Fast),
        (Initialising, Starting) => Event::Initialised {
            created: true,
            reconcile: Timing::Skip,
        },
        (Initialising, Stopped) => Event::PrepareFailed("initdb failed".into()),
        (Starting, Ready) => Event::Accepting,
        (Starting, Restarting) => exited_code(1, "t [100] postmaster FATAL:  x", now),
        (Starting | Ready, Stopping) => Event::Stop(ShutdownMode::Fast),
        (Starting, Stopped) => Event::SpawnFailed("cannot start postgres".into()),
        (Ready, Restarting) => killed(Signal::SIGKILL, false, now),
        (Restarting, Starting) => Event::Timer(Timer::Backoff),
        (Restarting, Stopped) => Event::Stop(ShutdownMode::Fast),
        (Stopping, Stopped) => exited_code(0, "", now),
        other => panic!("no event for {other:?}"),
    };
    let actions = step(&mut m, event);
    (m, actions)
}

#[test]
fn every_allowed_edge_is_taken_by_its_event() {
    for &(from, to) in ALLOWED {
        let (m, actions) = drive(from, to);
        assert_eq!(m.state(), to, "{from} -> {to}: {actions:#?}");
        assert!(
            has(&actions, &Action::WriteStatus),
            "{from} -> {to} writes the status"
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Bug(_))),
            "{from} -> {to}: {actions:#?}"
        );
    }
}

#[test]
fn the_table_refuses_impossible_edges() {
    for (from, to) in [
        (Installing, Ready),
        (Ready, Starting),
        (Ready, Stopped),
        (Stopped, Starting),
        (Stopping, Starting),
        (Restarting, Ready),
        (Restarting, Stopping),
    ] {
        assert!(!allowed(from, to), "{from} -> {to}");
    }
}

#[test]
fn events_that_do_not_apply_change_nothing() {
    // A late probe answer, a stale timer, a reconcile that was not asked for.
    let mut m = ready();
    let before = m.record.clone();
    for event in [
        Event::Accepting,
        Event::Timer(Timer::Backoff),
        Event::Reconciled,
        Event::Installed {
            version: "16".into(),
        },
    ] {
        let actions = step(&mut m, event);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::WriteStatus)),
            "{actions:?}"
        );
    }
    // Installed while Ready asks for an impossible edge: reported as a bug, state kept.
    let actions = step(
        &mut m,
        Event::Installed {
            version: "16".into(),
        },
    );
    assert!(
        actions.iter().any(|a| matches!(a, Action::Bug(_))),
        "{actions:?}"
    );
    assert_eq!(m.record, before);
}

// ---- case 1: a healthy server is never given up on ----

#[test]
fn crashes_of_a_ready_server_always_restart_and_never_give_up() {
    let mut m = ready();
    let t0 = Instant::now();
    let mut delays = vec![];
    for i in 0..20u32 {
        let at = t0 + Duration::from_millis(1200 * i as u64);
        let actions = run(&mut m, vec![killed(Signal::SIGKILL, false, at)]);
        assert_eq!(finish(&actions), None, "gave up after {i} crashes");
        assert_eq!(m.state(), Restarting);
        delays.push(backoff(&actions).unwrap());
        run(
            &mut m,
            vec![
                Event::Timer(Timer::Backoff),
                Event::Spawned { pid: PID },
                Event::Accepting,
            ],
        );
        assert_eq!(m.state(), Ready);
    }
    assert_eq!(m.record.restarts, 20);
    assert_eq!(m.record.failed_starts, 0);
    // The first at once, then doubling from backoff_initial (100 ms) to backoff_max (10 s).
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(&ms[..6], &[0, 100, 200, 400, 800, 1600]);
    assert!(
        ms.iter().all(|d| *d <= 10_000) && ms[19] == 10_000,
        "{ms:?}"
    );
}

#[test]
fn the_backoff_is_reset_after_a_stable_spell_of_ready() {
    let mut m = ready();
    let now = Instant::now();
    for _ in 0..3 {
        run(
            &mut m,
            vec![
                killed(Signal::SIGKILL, false, now),
                Event::Timer(Timer::Backoff),
                Event::Spawned { pid: PID },
            ],
        );
        let actions = run(&mut m, vec![Event::Accepting]);
        assert!(has(
            &actions,
            &Action::Arm(Timer::Stable, Duration::from_secs(30))
        ));
    }
    run(&mut m, vec![Event::Timer(Timer::Stable)]);
    let actions = run(&mut m, vec![killed(Signal::SIGKILL, false, now)]);
    assert_eq!(
        backoff(&actions),
        Some(Duration::ZERO),
        "the first crash since stable: at once"
    );
    run(
        &mut m,
        vec![
            Event::Timer(Timer::Backoff),
            Event::Spawned { pid: PID },
            Event::Accepting,
        ],
    );
    let actions = run(&mut m, vec![killed(Signal::SIGKILL, false, now)]);
    assert_eq!(backoff(&actions), Some(Duration::from_millis(100)));
    // Leaving Ready cancels the stable timer, so a short spell does not reset it.
    assert!(has(&actions, &Action::Cancel(Timer::Stable)));
}

#[test]
fn failed_starts_within_the_window_give_up_with_the_servers_own_words() {
    let mut m = starting(Timing::Skip);
    let t0 = Instant::now();
    let fatal = "t [100] postmaster LOG:  invalid value for parameter \"shared_buffers\": \"lots\"\n\
                 t [100] postmaster FATAL:  configuration file contains errors";
    for i in 0..4u64 {
        let actions = run(
            &mut m,
            vec![exited_code(1, fatal, t0 + Duration::from_millis(300 * i))],
        );
        assert_eq!(finish(&actions), None);
        assert_eq!(m.state(), Restarting);
        run(
            &mut m,
            vec![Event::Timer(Timer::Backoff), Event::Spawned { pid: PID }],
        );
    }
    let actions = run(
        &mut m,
        vec![exited_code(1, fatal, t0 + Duration::from_millis(1500))],
    );
    let Some(Finish::Failed(why)) = finish(&actions) else {
        panic!("{actions:#?}")
    };
    assert!(why.contains("failed to start 5 times within 60s"), "{why}");
    assert!(
        why.contains("invalid value for parameter \"shared_buffers\""),
        "{why}"
    );
    assert_eq!(m.state(), Stopped);
    assert_eq!(m.record.gave_up.as_deref(), Some(why.as_str()));
    assert_eq!(m.record.failed_starts, 5);
}

#[test]
fn failed_starts_outside_the_window_are_forgotten() {
    let mut m = starting(Timing::Skip);
    let t0 = Instant::now();
    for i in 0..10u64 {
        // One failed start every 20 s: never 5 within 60 s.
        let actions = run(
            &mut m,
            vec![exited_code(1, "", t0 + Duration::from_secs(20 * i))],
        );
        assert_eq!(finish(&actions), None, "after {i}");
        run(
            &mut m,
            vec![Event::Timer(Timer::Backoff), Event::Spawned { pid: PID }],
        );
    }
}

#[test]
fn crashes_do_not_count_toward_failed_starts() {
    let mut m = starting(Timing::Skip);
    let now = Instant::now();
    for _ in 0..4 {
        run(
            &mut m,
            vec![
                exited_code(1, "", now),
                Event::Timer(Timer::Backoff),
                Event::Spawned { pid: PID },
            ],
        );
    }
    // Four failed starts, then the fifth start succeeds and crashes many times.
    run(&mut m, vec![Event::Accepting]);
    for _ in 0..10 {
        let actions = run(&mut m, vec![killed(Signal::SIGKILL, false, now)]);
        assert_eq!(finish(&actions), None);
        run(
            &mut m,
            vec![
                Event::Timer(Timer::Backoff),
                Event::Spawned { pid: PID },
                Event::Accepting,
            ],
        );
    }
    assert_eq!((m.record.failed_starts, m.record.restarts), (4, 10));
}

// ---- case 2: honest explanations ----

#[test]
fn a_kill_from_outside_is_named_and_no_log_line_is_quoted() {
    let mut m = ready();
    let actions = run(&mut m, vec![killed(Signal::SIGKILL, false, Instant::now())]);
    let exit = m.record.last_exit.clone().unwrap();
    assert!(exit.from_outside && !exit.oom_killed);
    assert_eq!(exit.signal, Some(9));
    assert_eq!(exit.text, "signal 9 (SIGKILL), sent from outside pgwarden");
    let logged: Vec<&String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(Level::Error, text) => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(logged.len(), 1, "{actions:#?}");
    assert!(
        logged[0].contains("sent from outside pgwarden"),
        "{}",
        logged[0]
    );
    assert!(!logged[0].contains("ready to accept"), "{}", logged[0]);
}

#[test]
fn the_oom_killer_is_named_with_the_limit() {
    let mut m = ready();
    let Event::Exited(mut report) = killed(Signal::SIGKILL, false, Instant::now()) else {
        unreachable!()
    };
    report.oom_killed = true;
    report.memory_limit = "512 MiB".into();
    run(&mut m, vec![Event::Exited(report)]);
    let exit = m.record.last_exit.clone().unwrap();
    assert!(exit.oom_killed && !exit.from_outside);
    assert!(
        exit.text
            .contains("killed by the kernel's OOM killer (memory limit: 512 MiB)"),
        "{}",
        exit.text
    );
}

#[test]
fn a_crash_the_server_raised_itself_is_not_from_outside() {
    let mut m = ready();
    run(&mut m, vec![killed(Signal::SIGSEGV, false, Instant::now())]);
    assert!(!m.record.last_exit.clone().unwrap().from_outside);
}

#[test]
fn a_give_up_without_a_fatal_line_quotes_nothing() {
    let mut m = Machine::new(Policy {
        supervision: Supervision {
            max_failures: 1,
            ..Supervision::default()
        },
        ..policy()
    });
    m.start();
    run(
        &mut m,
        vec![
            Event::Installed {
                version: "16".into(),
            },
            Event::Initialised {
                created: false,
                reconcile: Timing::Skip,
            },
            Event::Spawned { pid: PID },
        ],
    );
    let Event::Exited(mut report) = exited_code(1, "", Instant::now()) else {
        unreachable!()
    };
    report.explanation = None;
    let actions = run(&mut m, vec![Event::Exited(report)]);
    let Some(Finish::Failed(why)) = finish(&actions) else {
        panic!()
    };
    assert!(why.contains("server said: (nothing)"), "{why}");
}

// ---- case 3: READY=1 only when ready; HUP queued in every state ----

#[test]
fn ready_1_is_sent_once_on_the_first_ready_edge() {
    let mut m = starting(Timing::Skip);
    let first = run(&mut m, vec![Event::Accepting]);
    assert_eq!(notices(&first), [Notice::FirstReady]);
    let again = run(
        &mut m,
        vec![
            killed(Signal::SIGKILL, false, Instant::now()),
            Event::Timer(Timer::Backoff),
            Event::Spawned { pid: PID },
            Event::Accepting,
        ],
    );
    assert!(!notices(&again).contains(&Notice::FirstReady), "{again:#?}");
    assert!(!notices(&again).contains(&Notice::Reloaded), "{again:#?}");
}

#[test]
fn a_hup_while_starting_never_signals_the_postmaster_before_ready() {
    let mut m = starting(Timing::Skip);
    let during = run(&mut m, vec![Event::Reload]);
    assert_eq!(
        during,
        [Action::ApplyConfig],
        "settings rewritten, nothing signalled"
    );
    assert!(notices(&during).is_empty(), "no READY=1 while starting");
    let at_ready = run(&mut m, vec![Event::Accepting]);
    assert_eq!(
        notices(&at_ready),
        [Notice::FirstReady, Notice::Reloading, Notice::Reloaded],
        "{at_ready:#?}"
    );
    let signal_at = at_ready
        .iter()
        .position(|a| *a == Action::SignalReload)
        .unwrap();
    let ready_at = at_ready
        .iter()
        .position(|a| *a == Action::Notify(Notice::FirstReady))
        .unwrap();
    assert!(ready_at < signal_at);
}

#[test]
fn a_hup_while_installing_initialising_or_backing_off_is_applied_at_the_next_spawn() {
    // Installing and Initialising.
    for installed in [false, true] {
        let mut m = machine();
        if installed {
            run(
                &mut m,
                vec![Event::Installed {
                    version: "16".into(),
                }],
            );
        }
        let queued = run(&mut m, vec![Event::Reload]);
        assert!(
            !queued
                .iter()
                .any(|a| matches!(a, Action::SignalReload | Action::Notify(_))),
            "{queued:?}"
        );
        let mut events = vec![];
        if !installed {
            events.push(Event::Installed {
                version: "16".into(),
            });
        }
        events.push(Event::Initialised {
            created: true,
            reconcile: Timing::Skip,
        });
        let actions = run(&mut m, events);
        let apply = actions
            .iter()
            .position(|a| *a == Action::ApplyConfig)
            .expect("applied");
        let spawn = actions.iter().position(|a| *a == Action::Spawn).unwrap();
        assert!(apply < spawn, "{actions:#?}");
        assert!(!actions.contains(&Action::SignalReload));
    }
    // Backing off.
    let mut m = ready();
    run(&mut m, vec![killed(Signal::SIGKILL, false, Instant::now())]);
    assert!(
        run(&mut m, vec![Event::Reload])
            .iter()
            .all(|a| matches!(a, Action::Log(..)))
    );
    let actions = run(&mut m, vec![Event::Timer(Timer::Backoff)]);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::ApplyConfig | Action::Spawn))
            .collect::<Vec<_>>(),
        [&Action::ApplyConfig, &Action::Spawn]
    );
    // Applied once: the next spawn does not re-read again.
    run(
        &mut m,
        vec![
            Event::Spawned { pid: PID },
            killed(Signal::SIGKILL, false, Instant::now()),
        ],
    );
    assert!(!run(&mut m, vec![Event::Timer(Timer::Backoff)]).contains(&Action::ApplyConfig));
}

#[test]
fn reloading_1_and_ready_1_surround_only_the_reload_of_a_ready_server() {
    let mut m = ready();
    let actions = run(&mut m, vec![Event::Reload]);
    assert_eq!(
        actions,
        [
            Action::Notify(Notice::Reloading),
            Action::ApplyConfig,
            Action::SignalReload,
            Action::Notify(Notice::Reloaded)
        ]
    );
    // Stopping: nothing.
    run(&mut m, vec![Event::Stop(ShutdownMode::Fast)]);
    assert!(run(&mut m, vec![Event::Reload]).is_empty());
}

// ---- case 4: the reload keeps the launch's settings (see launch::tests) ----
// The machine only asks for ApplyConfig; the executor applies `launch::effective`.

#[test]
fn a_reload_changes_the_policy() {
    let mut m = ready();
    let mut p = policy();
    p.supervision.backoff_initial = Duration::from_millis(7);
    p.supervision.backoff_max = Duration::from_millis(7);
    run(&mut m, vec![Event::Reconfigured(p)]);
    run(
        &mut m,
        vec![
            killed(Signal::SIGKILL, false, Instant::now()),
            Event::Timer(Timer::Backoff),
            Event::Spawned { pid: PID },
            Event::Accepting,
        ],
    );
    let actions = run(&mut m, vec![killed(Signal::SIGKILL, false, Instant::now())]);
    assert_eq!(backoff(&actions), Some(Duration::from_millis(7)));
}

// ---- case 6: a stop interrupts anything, and is obeyed at once ----

#[test]
fn a_stop_during_the_before_ready_reconcile_cancels_it_and_stops_the_server() {
    let mut m = starting(Timing::BeforeReady);
    let actions = run(&mut m, vec![Event::Accepting]);
    assert!(has(&actions, &Action::StartReconcile));
    assert_eq!(m.state(), Starting, "not ready before the reconcile");
    let actions = run(&mut m, vec![Event::Stop(ShutdownMode::Fast)]);
    assert!(has(&actions, &Action::CancelReconcile));
    assert!(has(
        &actions,
        &Action::Escalate(escalation::shutdown(
            Signal::SIGINT,
            Duration::from_secs(30)
        ))
    ));
    assert_eq!(m.state(), Stopping);
    assert!(!notices(&actions).contains(&Notice::FirstReady));
    let done = run(&mut m, vec![exited_code(0, "", Instant::now())]);
    assert_eq!(finish(&done), Some(Finish::Stopped));
}

#[test]
fn the_before_ready_reconcile_comes_before_ready() {
    let mut m = starting(Timing::BeforeReady);
    run(&mut m, vec![Event::Accepting]);
    let actions = run(&mut m, vec![Event::Reconciled]);
    assert_eq!(m.state(), Ready);
    assert!(notices(&actions).contains(&Notice::FirstReady));
}

#[test]
fn the_after_ready_reconcile_starts_after_ready_1() {
    let mut m = starting(Timing::AfterReady);
    let actions = run(&mut m, vec![Event::Accepting]);
    let ready_at = actions
        .iter()
        .position(|a| *a == Action::Notify(Notice::FirstReady))
        .unwrap();
    let reconcile_at = actions
        .iter()
        .position(|a| *a == Action::StartReconcile)
        .unwrap();
    assert!(ready_at < reconcile_at);
}

#[test]
fn a_stop_interrupts_backoff_install_and_recovery() {
    // Backing off: stopped at once, the timer cancelled.
    let mut m = ready();
    run(&mut m, vec![killed(Signal::SIGKILL, false, Instant::now())]);
    let actions = run(&mut m, vec![Event::Stop(ShutdownMode::Fast)]);
    assert!(has(&actions, &Action::Cancel(Timer::Backoff)));
    assert_eq!(finish(&actions), Some(Finish::Stopped));
    // Installing: the download is cancelled.
    let mut m = machine();
    let actions = run(&mut m, vec![Event::Stop(ShutdownMode::Fast)]);
    assert!(has(&actions, &Action::CancelInstall));
    assert_eq!(finish(&actions), Some(Finish::Stopped));
    // Crash recovery (Starting after a crash): the server is stopped.
    let mut m = ready();
    run(
        &mut m,
        vec![
            killed(Signal::SIGKILL, false, Instant::now()),
            Event::Timer(Timer::Backoff),
            Event::Spawned { pid: PID },
        ],
    );
    let actions = run(&mut m, vec![Event::Stop(ShutdownMode::Smart)]);
    assert!(has(
        &actions,
        &Action::Escalate(escalation::shutdown(
            Signal::SIGTERM,
            Duration::from_secs(30)
        ))
    ));
    assert_eq!(m.state(), Stopping);
}

#[test]
fn a_stop_during_first_launch_waits_for_it_then_stops() {
    let mut m = machine();
    run(
        &mut m,
        vec![Event::Installed {
            version: "16".into(),
        }],
    );
    assert!(finish(&run(&mut m, vec![Event::Stop(ShutdownMode::Fast)])).is_none());
    let actions = run(
        &mut m,
        vec![Event::Initialised {
            created: true,
            reconcile: Timing::Skip,
        }],
    );
    assert!(!has(&actions, &Action::Spawn));
    assert_eq!(finish(&actions), Some(Finish::Stopped));
}

#[test]
fn a_second_stop_hurries_and_an_immediate_one_quits_at_once() {
    let mut m = ready();
    run(&mut m, vec![Event::Stop(ShutdownMode::Fast)]);
    assert_eq!(run(&mut m, vec![Event::StopNow]), [Action::Hurry]);
    let mut m = ready();
    let actions = run(&mut m, vec![Event::StopNow]);
    assert!(has(
        &actions,
        &Action::Escalate(escalation::shutdown(
            Signal::SIGQUIT,
            Duration::from_secs(30)
        ))
    ));
}

// ---- hangs and the watchdog ----

#[test]
fn a_hang_is_killed_through_the_escalation_and_restarted_as_a_crash() {
    let mut m = ready();
    let answered = run(&mut m, vec![Event::Health { answered: true }]);
    assert!(has(
        &answered,
        &Action::Arm(Timer::Hang, Duration::from_secs(30))
    ));
    let actions = run(&mut m, vec![Event::Timer(Timer::Hang)]);
    assert!(has(&actions, &Action::Escalate(escalation::hang())));
    assert_eq!(
        run(&mut m, vec![Event::WatchdogTick]),
        [],
        "no watchdog ping while hung"
    );
    let actions = run(&mut m, vec![killed(Signal::SIGKILL, true, Instant::now())]);
    assert_eq!(m.state(), Restarting);
    assert!(backoff(&actions).is_some());
    let exit = m.record.last_exit.clone().unwrap();
    assert!(!exit.from_outside, "pgwarden killed it");
    assert_eq!(m.record.restarts, 1);
    assert!(
        m.record.cause.contains("after a hang"),
        "{}",
        m.record.cause
    );
}

#[test]
fn probes_pgwarden_could_not_make_never_lead_to_a_hang_verdict() {
    // Out of descriptors itself (an HTTP flood before the endpoint was bounded), pgwarden
    // cannot open the probe's socket: that is not the server's silence.
    let mut m = ready();
    let hang_after = Duration::from_secs(30);
    let first = run(&mut m, vec![Event::Unprobed]);
    assert!(
        has(&first, &Action::Arm(Timer::Hang, hang_after)),
        "{first:?}"
    );
    let warnings = |actions: &[Action]| {
        actions
            .iter()
            .filter(
                |a| matches!(a, Action::Log(Level::Warn, text) if text.contains("no hang verdict")),
            )
            .count()
    };
    assert_eq!(warnings(&first), 1, "{first:?}");
    let again = run(&mut m, vec![Event::Unprobed, Event::Unprobed]);
    assert_eq!(warnings(&again), 0, "said once per spell: {again:?}");
    assert!(has(&again, &Action::Arm(Timer::Hang, hang_after)));
    // Even if the window runs out meanwhile, no verdict: a new window.
    let timer = run(&mut m, vec![Event::Timer(Timer::Hang)]);
    assert_eq!(timer, [Action::Arm(Timer::Hang, hang_after)]);
    assert!(!has(&timer, &Action::Escalate(escalation::hang())));
    assert_eq!(m.state(), Ready);
    assert_eq!(
        run(&mut m, vec![Event::WatchdogTick]),
        [Action::Notify(Notice::Watchdog)],
        "not hung"
    );
    // Once a probe reaches the server again, silence counts: the verdict comes as before.
    let silent = run(&mut m, vec![Event::Health { answered: false }]);
    assert!(!has(&silent, &Action::Arm(Timer::Hang, hang_after)));
    let actions = run(&mut m, vec![Event::Timer(Timer::Hang)]);
    assert!(has(&actions, &Action::Escalate(escalation::hang())));
}

#[test]
fn the_watchdog_is_pinged_from_ready_1_on() {
    let mut m = starting(Timing::Skip);
    assert_eq!(run(&mut m, vec![Event::WatchdogTick]), []);
    run(&mut m, vec![Event::Accepting]);
    assert_eq!(
        run(&mut m, vec![Event::WatchdogTick]),
        [Action::Notify(Notice::Watchdog)]
    );
}

#[test]
fn an_impossible_transition_is_reported_as_a_bug_in_release_builds_too() {
    // Stopped is final: a late exit report must not move it (and is ignored), a late
    // "installed" is refused loudly.
    let mut m = machine();
    run(&mut m, vec![Event::Stop(ShutdownMode::Fast)]);
    assert_eq!(m.state(), Stopped);
    let actions = run(
        &mut m,
        vec![Event::Installed {
            version: "16".into(),
        }],
    );
    assert!(
        matches!(&actions[..], [Action::Bug(text)] if text.contains("stopped -> initialising")),
        "{actions:?}"
    );
    assert_eq!(m.state(), Stopped);
}

#[test]
fn a_swap_stops_the_ready_server_at_once_swaps_then_starts_and_answers_when_ready() {
    let mut m = ready();
    let actions = step(&mut m, Event::Swap);
    assert_eq!(m.state(), Restarting);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Escalate(ladder) if !ladder.is_empty())),
        "{actions:#?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::SwapIn)));
    // The swap happens once the server is gone, before the spawn.
    let actions = step(&mut m, killed(Signal::SIGQUIT, true, Instant::now()));
    let swap = actions.iter().position(|a| matches!(a, Action::SwapIn));
    let spawn = actions.iter().position(|a| matches!(a, Action::Spawn));
    assert!(swap.is_some() && swap < spawn, "{actions:#?}");
    assert_eq!(m.state(), Starting);
    assert_eq!(m.record.restarts, 0, "a swap is no crash");
    let actions = run(&mut m, vec![Event::Spawned { pid: PID }, Event::Accepting]);
    assert_eq!(m.state(), Ready);
    assert!(has(&actions, &Action::AnswerSwap { failed: None }));
}

#[test]
fn a_swap_is_refused_unless_ready_and_a_stop_meanwhile_wins() {
    let mut m = starting(Timing::Skip);
    let actions = step(&mut m, Event::Swap);
    assert_eq!(m.state(), Starting);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::AnswerSwap { failed: Some(_) })),
        "{actions:#?}"
    );
    let mut m = ready();
    step(&mut m, Event::Swap);
    step(&mut m, Event::Stop(ShutdownMode::Fast));
    let actions = step(&mut m, killed(Signal::SIGQUIT, true, Instant::now()));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SwapIn | Action::Spawn))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::AnswerSwap { failed: Some(_) }))
    );
    assert_eq!(m.state(), Stopped);
    assert_eq!(finish(&actions), Some(Finish::Stopped));
}
