//! Writing to a monitor whose peer is gone must be an error, never SIGPIPE. Alone in its own
//! test binary because it restores SIGPIPE's default action (death) for the whole process.

mod support;
use support::fake_qmp;

use std::os::unix::net::UnixStream;
use std::time::Duration;

#[test]
fn writing_to_a_dead_peer_is_an_error_not_sigpipe() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = fake_qmp::FakePeer::start(theirs, fake_qmp::handshake());
    let c = qm::QmpClient::new(ours.into(), "fake", qm::DEFAULT_MAX_MESSAGE).unwrap();
    c.handshake(Duration::from_secs(10)).unwrap();
    peer.join().unwrap();
    // The peer has closed; with SIGPIPE at its default action a plain write would kill us.
    // SAFETY: restoring the default disposition is what a C host might have.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    for _ in 0..3 {
        assert!(c
            .cmd("query-status", None, Duration::from_secs(10))
            .is_err());
    }
}

#[test]
fn sending_a_descriptor_to_a_dead_peer_is_an_error_not_sigpipe() {
    use std::os::fd::AsFd;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = fake_qmp::FakePeer::start(theirs, fake_qmp::handshake());
    let c = qm::QmpClient::new(ours.into(), "fake", qm::DEFAULT_MAX_MESSAGE).unwrap();
    c.handshake(Duration::from_secs(10)).unwrap();
    peer.join().unwrap();
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let file = std::fs::File::open("/dev/null").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(c.send_fd(file.as_fd(), Duration::from_secs(5)).is_err());
}
