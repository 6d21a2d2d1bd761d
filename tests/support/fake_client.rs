//! A `QmpClient` wired to a scripted fake peer (`fake_qmp.rs`, which the including test
//! binary declares as `mod fake_qmp` at its root).
#![allow(dead_code)]

use std::os::unix::net::UnixStream;

use super::fake_qmp::{handshake, FakePeer, Step};
use qm::QmpClient;

/// A client on one end of a socketpair, the peer running `script` on the other.
pub fn client_with(script: Vec<Step>, max_message: usize) -> (QmpClient, FakePeer) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = FakePeer::start(theirs, script);
    let client = QmpClient::new(ours.into(), "fake", max_message).unwrap();
    (client, peer)
}

/// [`client_with`] the default message cap.
pub fn client(script: Vec<Step>) -> (QmpClient, FakePeer) {
    client_with(script, qm::DEFAULT_MAX_MESSAGE)
}

/// The standard handshake, then `rest`.
pub fn with_handshake(rest: Vec<Step>) -> Vec<Step> {
    let mut script = handshake();
    script.extend(rest);
    script
}
