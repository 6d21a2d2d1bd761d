//! `qm`: run QEMU and talk QMP from a terminal or a script.
//!
//! Built with the `cli` feature (`cargo build --features cli --bin qm`). Arguments are parsed by
//! hand: four subcommand forms do not earn an argument-parsing dependency.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use qm::{AttachAddress, Cancel, Error, Machine, Value, Wait};

const USAGE: &str = "\
usage: qm [--json] run [--transcript FILE] [--linux-guest] [--binary QEMU] [-- QEMU-ARGS...]
       qm [--json] shell [--transcript FILE]
                         [--attach ADDRESS | [--linux-guest] [--binary QEMU] [-- QEMU-ARGS...]]
       qm [--json] schema [--supports PATH]... [--command NAME]
                          [--attach ADDRESS | [--binary QEMU] [-- QEMU-ARGS...]]
       qm [--json] replay TRANSCRIPT [-- PROGRAM [ARGS...]]
       qm --help | --version

  run     launch QEMU with a QMP monitor and print its events as they come, until QEMU exits
          or Ctrl-C (SIGINT, SIGTERM), which shuts it down
  shell   an interactive QMP shell on a QEMU qm launches, or with --attach on the QMP socket of a
          running one (unix:PATH, tcp:HOST:PORT or a path; qm detaches at the end and leaves it
          running). A line is a command and its arguments, as key=value words (a value that
          parses as JSON is JSON, else a string) or as one JSON object:
              query-status
              device_del id=net0
              blockdev-add {\"driver\": \"null-co\", \"node-name\": \"n0\"}
          Tab completes command names (from query-commands) and argument names (from the
          schema); up/down walk the history, kept in $XDG_STATE_HOME/qm/history (else
          ~/.local/state/qm/history); events are shown between commands; Ctrl-D ends. Without
          a terminal, lines come from stdin.
  schema  ask the QMP schema (query-qmp-schema) of a QEMU qm launches (-machine none unless
          QEMU-ARGS are given) or, with --attach, of a running one:
          --supports PATH  is PATH in the schema? A libvirt-style query path, e.g.
                           'blockdev-add/arg-type/+file/aio/^io_uring' (repeatable: all must be)
          --command NAME   the command's arguments: name, optional or not, type, union cases,
                           features
          neither          the names of every command and event
  replay  run a transcript qm recorded (Machine::set_qmp_transcript), or any qm-fake-qemu script,
          against the fake QEMU: with PROGRAM, run it with QM_QEMU set to qm-fake-qemu and
          QM_FAKE_SCRIPT to TRANSCRIPT (qm's machines, the pytest plugin, qmtest and qm itself
          honour QM_QEMU), exiting with its status; without, a shell (as above) on the fake,
          which then says whether what was typed followed the transcript

options:
  --json          one JSON object per line on stdout: events as QEMU sent them, and in the
                  shell each command's raw response ({\"return\": ...} or {\"error\": ...});
                  schema: {\"path\": ..., \"supported\": ...} per path, the command as an
                  object, or {\"commands\": [...], \"events\": [...]}
  --binary QEMU   the QEMU binary (default: $QM_QEMU, else qemu-system-x86_64); also
                  --qemu-binary, as the pytest plugin spells it
  --linux-guest   boot qm's Linux test guest (guest/linux/build --qemu-args, found above the
                  working directory or at $QM_LINUX_GUEST_BUILD), with a console
  --attach ADDR   (shell, schema) attach to a running QEMU instead of launching one
  --transcript FILE  (run, shell) record the QMP conversation (and the console's) in FILE
                  (JSON lines), which qm replay runs on the fake QEMU

exit status: 0 success (run: QEMU exited with 0, or was shut down on Ctrl-C; schema --supports:
every path is supported; replay: the program exited with 0, or what was typed followed the
transcript); 1 an error (run: QEMU exited otherwise; shell without a terminal: a command failed;
schema: a path is not supported, or there is no such command; replay: the fake's verdict was not
0, its log is on stderr); 2 bad usage (a malformed query path, an unreadable or malformed
transcript); replay with PROGRAM: the program's own status.
";

/// What the command line asked for.
#[derive(Default)]
struct Args {
    json: bool,
    command: String,
    linux_guest: bool,
    binary: Option<String>,
    attach: Option<String>,
    qemu_args: Vec<String>,
    /// `schema --supports`: the query paths.
    supports: Vec<String>,
    /// `schema --command`: the command to describe.
    describe: Option<String>,
    /// `replay`: the transcript.
    transcript: Option<String>,
    /// `run`, `shell`: where to record the QMP transcript.
    record: Option<String>,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{what} needs a value"))
        };
        match arg.as_str() {
            "--json" => args.json = true,
            "--linux-guest" => args.linux_guest = true,
            "--binary" | "--qemu-binary" => args.binary = Some(value(arg)?),
            "--attach" => args.attach = Some(value(arg)?),
            "--supports" => args.supports.push(value(arg)?),
            "--command" => args.describe = Some(value(arg)?),
            "--transcript" => args.record = Some(value(arg)?),
            "--" => {
                args.qemu_args = it.by_ref().cloned().collect();
            }
            "run" | "shell" | "schema" | "replay" if args.command.is_empty() => {
                args.command = arg.clone()
            }
            other
                if args.command == "replay"
                    && args.transcript.is_none()
                    && !other.starts_with('-') =>
            {
                args.transcript = Some(other.to_owned())
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let schema_opts = !args.supports.is_empty() || args.describe.is_some();
    match args.command.as_str() {
        "" => Err("no command (run, shell, schema or replay)".into()),
        "run" | "replay" if args.attach.is_some() => Err("--attach is for shell and schema".into()),
        "schema" if args.linux_guest => Err("--linux-guest is for run and shell".into()),
        "schema" | "replay" if args.record.is_some() => {
            Err("--transcript is for run and shell".into())
        }
        "replay" if args.transcript.is_none() => Err("replay needs a TRANSCRIPT".into()),
        "replay" if args.linux_guest || args.binary.is_some() => {
            Err("replay runs the fake QEMU: no --binary, no --linux-guest".into())
        }
        "run" | "shell" | "replay" if schema_opts => {
            Err("--supports and --command are for schema".into())
        }
        _ if args.attach.is_some() && (args.linux_guest || !args.qemu_args.is_empty()) => {
            Err("--attach takes no QEMU arguments and no --linux-guest".into())
        }
        _ => Ok(args),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") && !argv.iter().any(|a| a == "--") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if argv.iter().any(|a| a == "--version") {
        println!("qm {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let args = match parse(&argv) {
        Ok(args) => args,
        Err(why) => {
            eprintln!("qm: {why}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.command.as_str() {
        "run" => run(&args),
        "schema" => schema(&args),
        "replay" => replay(&args),
        _ => shell(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("qm: {err}");
            ExitCode::from(1)
        }
    }
}

// ---- launching -----------------------------------------------------------------------------

fn binary(args: &Args) -> String {
    args.binary
        .clone()
        .or_else(|| std::env::var("QM_QEMU").ok())
        .unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// `guest/linux/build --qemu-args`, found at $QM_LINUX_GUEST_BUILD or above the working dir.
fn linux_guest_args() -> Result<Vec<String>, String> {
    let build = match std::env::var("QM_LINUX_GUEST_BUILD") {
        Ok(path) => path.into(),
        Err(_) => {
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            cwd.ancestors()
                .map(|d| d.join("guest/linux/build"))
                .find(|p| p.is_file())
                .ok_or("no Linux test guest: set QM_LINUX_GUEST_BUILD to qm's guest/linux/build")?
        }
    };
    let out = std::process::Command::new(&build)
        .arg("--qemu-args")
        .output()
        .map_err(|e| format!("{}: {e}", build.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --qemu-args failed: {}",
            build.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn launch(args: &Args) -> Result<Machine, Box<dyn std::error::Error>> {
    let vm = Machine::new(binary(args));
    vm.set_qmp_transcript(args.record.as_ref().map(Into::into));
    if args.linux_guest {
        vm.add_args(linux_guest_args()?);
        vm.set_console(None, 0);
        vm.set_drain_console(true);
    }
    if args.command == "schema" && args.qemu_args.is_empty() {
        vm.set_machine("none");
    }
    vm.add_args(args.qemu_args.clone());
    vm.launch_with(Wait::timeout(Duration::from_secs(300)))?;
    Ok(vm)
}

/// A token fired by SIGINT or SIGTERM: both are blocked in every thread and taken by one
/// thread with `sigwait` (nothing runs in a signal handler). QEMU starts with its own mask.
fn cancel_on_signals() -> Cancel {
    let cancel = Cancel::new();
    // SAFETY: plain calls on a local, initialised sigset; pthread_sigmask changes this
    // thread's mask, inherited by the threads started after it (qm's too).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fired = cancel.clone();
        std::thread::spawn(move || loop {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                fired.cancel();
            }
        });
    }
    cancel
}

// ---- run -----------------------------------------------------------------------------------

fn print_event(ev: &Value, json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{ev}");
    } else {
        let name = ev["event"].as_str().unwrap_or("?");
        let t = &ev["timestamp"];
        let when = format!(
            "{}.{:06}",
            t["seconds"].as_u64().unwrap_or(0),
            t["microseconds"].as_u64().unwrap_or(0)
        );
        match ev.get("data") {
            Some(data) => {
                let _ = writeln!(out, "{when} {name} {data}");
            }
            None => {
                let _ = writeln!(out, "{when} {name}");
            }
        }
    }
    let _ = out.flush();
}

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let cancel = cancel_on_signals();
    let vm = launch(args)?;
    if !args.json {
        eprintln!(
            "qm: QEMU running (pid {}); Ctrl-C shuts it down",
            vm.pid().unwrap_or(0)
        );
    }
    loop {
        match vm.get_qmp_event(Wait::forever().cancel(&cancel)) {
            Ok(Some(ev)) => print_event(&ev, args.json),
            Ok(None) => {}
            Err(Error::Interrupted) => {
                vm.shutdown(Duration::from_secs(30))?;
                return Ok(ExitCode::SUCCESS);
            }
            Err(Error::Disconnected(_)) => {
                // QEMU exited: its last events were read; wait for it and report its status.
                let _ = vm.wait(Duration::from_secs(30));
                return Ok(match vm.exitcode() {
                    Some(0) => ExitCode::SUCCESS,
                    code => {
                        eprintln!("qm: QEMU exited with status {code:?}");
                        ExitCode::from(1)
                    }
                });
            }
            Err(err) => return Err(err.into()),
        }
    }
}

// ---- shell ---------------------------------------------------------------------------------

/// A shell line as a command and its arguments: `cmd k=v ...` or `cmd {json}`.
fn parse_line(line: &str) -> Result<(String, Option<Value>), String> {
    let line = line.trim();
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok((cmd.to_owned(), None));
    }
    if rest.starts_with('{') {
        let args: Value = serde_json::from_str(rest).map_err(|e| format!("bad JSON: {e}"))?;
        return Ok((cmd.to_owned(), Some(args)));
    }
    let mut map = serde_json::Map::new();
    for word in rest.split_whitespace() {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        map.insert(k.to_owned(), value);
    }
    Ok((cmd.to_owned(), Some(Value::Object(map))))
}

/// Runs one line; prints the response; false when the command failed.
fn execute(vm: &Machine, line: &str, json: bool) -> bool {
    let (cmd, args) = match parse_line(line) {
        Ok(parsed) => parsed,
        Err(why) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": {"class": "qm", "desc": why}})
                );
            } else {
                eprintln!("qm: {why}");
            }
            return false;
        }
    };
    match vm.qmp(&cmd, args.as_ref()) {
        Ok(response) => {
            let ok = response.get("return").is_some();
            if json {
                println!("{response}");
            } else if let Some(ret) = response.get("return") {
                match ret {
                    Value::Object(m) if m.is_empty() => {}
                    _ => println!("{}", serde_json::to_string_pretty(ret).unwrap_or_default()),
                }
            } else {
                let err = &response["error"];
                println!(
                    "error: {}: {}",
                    err["class"].as_str().unwrap_or("?"),
                    err["desc"].as_str().unwrap_or("?")
                );
            }
            ok
        }
        Err(err) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"error": {"class": "qm", "desc": err.to_string()}})
                );
            } else {
                eprintln!("qm: {err}");
            }
            false
        }
    }
}

fn show_events(vm: &Machine, json: bool) {
    if let Ok(events) = vm.get_qmp_events(Wait::no_wait()) {
        for ev in &events {
            print_event(ev, json);
        }
    }
}

/// The machine a shell or a schema query works on: attached with `--attach`, else launched.
fn connect(args: &Args) -> Result<Machine, Box<dyn std::error::Error>> {
    match &args.attach {
        Some(addr) => {
            let vm = Machine::new(binary(args));
            vm.set_qmp_transcript(args.record.as_ref().map(Into::into));
            vm.attach(
                &addr.parse::<AttachAddress>()?,
                None,
                Duration::from_secs(30),
            )?;
            Ok(vm)
        }
        None => launch(args),
    }
}

fn shell(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let vm = connect(args)?;
    let result = shell_on(&vm, args, true);
    // A launched QEMU is shut down; an attached one is left running (detach).
    vm.shutdown(Duration::from_secs(30))?;
    result
}

/// Reads commands from the terminal (or stdin) and runs them on `vm` until the end; on a
/// terminal, `complete` asks QEMU for its commands and schema first, to complete them.
fn shell_on(
    vm: &Machine,
    args: &Args,
    complete: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let interactive = std::io::stdin().is_terminal() && !args.json;
    if interactive {
        return interactive_shell(vm, complete);
    }
    let mut all_ok = true;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        all_ok &= execute(vm, &line, args.json);
        show_events(vm, args.json);
        if !vm.is_running() {
            break;
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

// ---- schema --------------------------------------------------------------------------------

fn schema(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let vm = connect(args)?;
    let result = vm
        .schema_with(Wait::timeout(Duration::from_secs(120)))
        .map_err(Into::into)
        .and_then(|schema| answer(&schema, args));
    vm.shutdown(Duration::from_secs(30))?;
    result
}

/// Prints what the schema says about the paths, the command, or its names.
fn answer(
    schema: &qm::schema::Schema,
    args: &Args,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut out = std::io::stdout().lock();
    if !args.supports.is_empty() {
        // Every path is checked for its form before any answer is printed.
        let mut answers = Vec::new();
        for path in &args.supports {
            match schema.query(path) {
                Ok(found) => answers.push((path, found)),
                Err(err) => {
                    eprintln!("qm: {err}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        for (path, found) in &answers {
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"path": path, "supported": found})
                )?;
            } else {
                let what = if *found { "supported" } else { "not supported" };
                writeln!(out, "{path}: {what}")?;
            }
        }
        return Ok(if answers.iter().all(|(_, found)| *found) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if let Some(name) = &args.describe {
        let Some(command) = schema.command(name) else {
            eprintln!("qm: QEMU has no command {name:?}");
            return Ok(ExitCode::from(1));
        };
        if args.json {
            writeln!(out, "{}", command.to_value())?;
        } else {
            write!(out, "{}", describe(&command))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (commands, events) = (schema.command_names(), schema.event_names());
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"commands": commands, "events": events})
        )?;
    } else {
        for name in commands {
            writeln!(out, "{name}")?;
        }
        for name in events {
            writeln!(out, "event {name}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A command for people: a line for the command, then one per argument.
fn describe(command: &qm::schema::Command) -> String {
    let mut text = command.name.clone();
    if command.allow_oob {
        text.push_str(" (allows out-of-band)");
    }
    if !command.features.is_empty() {
        text.push_str(&format!(" [{}]", command.features.join(", ")));
    }
    text.push('\n');
    if command.arguments.is_empty() {
        text.push_str("  (no arguments)\n");
    }
    for a in &command.arguments {
        let optional = if a.optional { " (optional)" } else { "" };
        text.push_str(&format!("  {}{optional}: {}", a.name, a.kind));
        if !a.variants.is_empty() {
            // The cases are most of the enum's values: their count, not the list again.
            let n = a.variants.len();
            text.push_str(&format!(
                "; the union's tag ({n} cases with their own members)"
            ));
        }
        if !a.features.is_empty() {
            text.push_str(&format!(" [{}]", a.features.join(", ")));
        }
        text.push('\n');
    }
    text
}

// ---- replay --------------------------------------------------------------------------------

/// True when the first QMP command a transcript expects (after `qmp_capabilities`) is the
/// `query-commands` an interactive shell sends to complete.
fn starts_with_completion(transcript: &str) -> bool {
    transcript
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| {
            v["dir"] == "out" && matches!(v.get("chan").and_then(Value::as_str), None | Some("qmp"))
        })
        .filter_map(|v| v["msg"]["execute"].as_str().map(str::to_owned))
        .find(|name| name != "qmp_capabilities")
        .is_some_and(|name| name == "query-commands")
}

fn replay(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let given = args.transcript.as_deref().unwrap_or_default();
    // The fake would say the same at launch; said here, a bad transcript is a usage error.
    let text = match std::fs::read_to_string(given) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("qm: {given}: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Err(err) = qm::fake::Script::parse(&text) {
        eprintln!("qm: {given}: {err}");
        return Ok(ExitCode::from(2));
    }
    let transcript = std::path::absolute(given)?;
    let fake = qm::fake::binary_path();
    if let Some((program, rest)) = args.qemu_args.split_first() {
        let status = std::process::Command::new(program)
            .args(rest)
            .env("QM_QEMU", &fake)
            .env(qm::fake::SCRIPT_ENV, &transcript)
            .status()
            .map_err(|e| format!("{program}: {e}"))?;
        return Ok(match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("qm: {program} ended by a signal ({status})");
                ExitCode::from(1)
            }
        });
    }
    let vm = Machine::new(fake.to_string_lossy());
    vm.add_args([
        "-qm-fake-script".to_owned(),
        transcript.display().to_string(),
    ]);
    vm.launch_with(Wait::timeout(Duration::from_secs(60)))?;
    // What the interactive shell asks for completion are commands too: asked on the fake
    // only when the transcript (recorded by an interactive shell) expects them.
    let result = shell_on(&vm, args, starts_with_completion(&text));
    vm.shutdown(Duration::from_secs(30))?;
    match vm.exitcode() {
        Some(0) => result,
        code => {
            eprintln!(
                "qm: the fake QEMU's verdict: the transcript was not followed (status {})\n{}",
                code.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                vm.get_log().unwrap_or_default().trim_end()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Completes the first word of a line with QMP command names, and the next words with
/// `name=` for the command's arguments, from the schema.
struct Completion {
    commands: Vec<String>,
    schema: Option<std::sync::Arc<qm::schema::Schema>>,
}

impl rustyline::completion::Completer for Completion {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let word = &line[..pos];
        if let Some((command, rest)) = word.split_once(char::is_whitespace) {
            return Ok(self.arguments(command, rest, pos));
        }
        let found = self
            .commands
            .iter()
            .filter(|c| c.starts_with(word))
            .cloned()
            .collect();
        Ok((0, found))
    }
}

impl Completion {
    /// `name=` candidates for the word being typed after `command` (none inside JSON or a
    /// value), with where that word starts.
    fn arguments(&self, command: &str, rest: &str, pos: usize) -> (usize, Vec<String>) {
        let partial = rest.rsplit(char::is_whitespace).next().unwrap_or_default();
        let start = pos - partial.len();
        let Some(cmd) = self.schema.as_ref().and_then(|s| s.command(command)) else {
            return (start, Vec::new());
        };
        if rest.trim_start().starts_with('{') || partial.contains('=') {
            return (start, Vec::new());
        }
        let given: Vec<&str> = rest
            .split_whitespace()
            .filter_map(|w| w.split_once('=').map(|(k, _)| k))
            .collect();
        let found = cmd
            .arguments
            .iter()
            .filter(|a| a.name.starts_with(partial) && !given.contains(&a.name.as_str()))
            .map(|a| format!("{}=", a.name))
            .collect();
        (start, found)
    }
}

impl rustyline::hint::Hinter for Completion {
    type Hint = String;
}
impl rustyline::highlight::Highlighter for Completion {}
impl rustyline::validate::Validator for Completion {}
impl rustyline::Helper for Completion {}

/// The shell on a terminal; `complete`: ask QEMU for its commands and schema, to complete
/// (not on the fake QEMU, where they would be commands the transcript does not expect).
/// Where the shell keeps its history: `$XDG_STATE_HOME/qm/history`, else
/// `$HOME/.local/state/qm/history` (the XDG base directory specification's state directory).
fn history_path() -> Option<std::path::PathBuf> {
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::PathBuf::from(std::env::var_os("HOME").filter(|d| !d.is_empty())?)
            .join(".local/state"),
    };
    Some(state.join("qm/history"))
}

/// Adds the new lines to the history file (made with its directory when missing); a history
/// that cannot be written is said on stderr, and the shell goes on.
fn save_history(
    editor: &mut rustyline::Editor<Completion, rustyline::history::DefaultHistory>,
    path: &std::path::Path,
) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(err) = editor.append_history(path) {
        eprintln!("qm: saving the history in {}: {err}", path.display());
    }
}

fn interactive_shell(vm: &Machine, complete: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (mut commands, mut schema) = (Vec::new(), None);
    if complete {
        commands = vm
            .cmd("query-commands", None)?
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        commands.sort();
        // Without a schema (an odd QEMU), argument names are simply not completed.
        schema = vm.schema_with(Wait::timeout(Duration::from_secs(60))).ok();
    }
    let config = rustyline::Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .auto_add_history(true)
        .build();
    let mut editor: rustyline::Editor<Completion, rustyline::history::DefaultHistory> =
        rustyline::Editor::with_config(config)?;
    editor.set_helper(Some(Completion { commands, schema }));
    let history = history_path();
    if let Some(path) = &history {
        // A first run has no file yet: nothing to load.
        let _ = editor.load_history(path);
    }
    println!(
        "qm shell on {} (Tab completes, Ctrl-D ends)",
        if vm.is_attached() {
            "an attached QEMU"
        } else {
            "a QEMU qm launched"
        }
    );
    loop {
        show_events(vm, false);
        if !vm.is_running() {
            println!("QEMU is gone");
            return Ok(ExitCode::SUCCESS);
        }
        match editor.readline("(QEMU) ") {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) => {
                if let Some(path) = &history {
                    save_history(&mut editor, path);
                }
                execute(vm, &line, false);
            }
            Err(rustyline::error::ReadlineError::Interrupted) => {}
            Err(rustyline::error::ReadlineError::Eof) => return Ok(ExitCode::SUCCESS),
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn command_lines_parse() {
        let a = parse(&argv("--json run --linux-guest -- -m 64 -smp 2")).unwrap();
        assert!(a.json && a.linux_guest && a.command == "run");
        assert_eq!(a.qemu_args, argv("-m 64 -smp 2"));
        let a = parse(&argv("shell --attach unix:/tmp/q.sock")).unwrap();
        assert_eq!(a.attach.as_deref(), Some("unix:/tmp/q.sock"));
        for bad in [
            "",
            "frobnicate",
            "run --attach x",
            "shell --attach x -- -m 64",
            "run --binary",
        ] {
            assert!(parse(&argv(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shell_lines_parse() {
        assert_eq!(
            parse_line("query-status").unwrap(),
            ("query-status".into(), None)
        );
        let (cmd, args) = parse_line("device_del id=net0 force=true n=3").unwrap();
        assert_eq!(cmd, "device_del");
        assert_eq!(
            args.unwrap(),
            serde_json::json!({"id": "net0", "force": true, "n": 3})
        );
        let (_, args) = parse_line(r#"blockdev-add {"driver": "null-co"}"#).unwrap();
        assert_eq!(args.unwrap(), serde_json::json!({"driver": "null-co"}));
        assert!(parse_line("x notkv").is_err());
        assert!(parse_line("x {bad").is_err());
    }
}
