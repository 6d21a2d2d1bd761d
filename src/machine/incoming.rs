//! The machine's side of a restore (see [`crate::snapshot`]): the settings a saved state
//! depends on, and a launch that waits for an incoming migration (`-incoming defer`).

use serde_json::{json, Value};

use super::{lock, Machine};

/// What a saved state depends on in a machine's configuration: the devices QEMU creates come
/// from these, and a migration stream only loads into the same devices. Sockets, descriptors,
/// log and temp paths are not here: they differ from run to run and are not part of the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StateArgs {
    /// `set_machine`.
    pub(crate) machine: Option<String>,
    /// `set_console`: the device type (`None`: `-serial`) and the index.
    pub(crate) console: Option<(Option<String>, usize)>,
    /// Whether `set_guest_agent` gave the guest a channel (its kind does not matter to the
    /// guest: the device is the same).
    pub(crate) agent: bool,
    /// The extra arguments (`add_args`).
    pub(crate) args: Vec<String>,
}

impl StateArgs {
    /// As recorded in a state file's header.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "machine": self.machine,
            "console": self.console.as_ref().map(|(device, index)| json!({
                "device": device, "index": index,
            })),
            "guest_agent": self.agent,
            "args": self.args,
        })
    }

    /// Read back from a state file's header; `None` when it does not have this shape.
    pub(crate) fn from_json(v: &Value) -> Option<StateArgs> {
        let machine = match &v["machine"] {
            Value::Null => None,
            m => Some(m.as_str()?.to_owned()),
        };
        let console = match &v["console"] {
            Value::Null => None,
            c => {
                let device = match &c["device"] {
                    Value::Null => None,
                    d => Some(d.as_str()?.to_owned()),
                };
                Some((device, usize::try_from(c["index"].as_u64()?).ok()?))
            }
        };
        let args = v["args"]
            .as_array()?
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(StateArgs {
            machine,
            console,
            agent: v["guest_agent"].as_bool()?,
            args,
        })
    }
}

impl Machine {
    /// The settings a saved state of this machine depends on.
    pub(crate) fn state_args(&self) -> StateArgs {
        let cfg = lock(&self.cfg);
        StateArgs {
            machine: cfg.machine.clone(),
            console: cfg.console.clone(),
            agent: cfg.guest_agent.is_some(),
            args: cfg.args.clone(),
        }
    }

    /// Makes the next launches wait for an incoming migration (`-incoming defer` at the end of
    /// qm's own command line), or not.
    pub(crate) fn set_incoming_defer(&self, on: bool) {
        lock(&self.cfg).incoming_defer = on;
    }
}
