//! QEMU's `key=value,…` option syntax, shared by every part that writes a command line (the
//! machine's arguments, the guest agent's chardev, the test guest's drive). A leaf: it uses
//! nothing of the crate, so those parts need not reach into each other for it.

/// A value for QEMU's `key=value,…` option syntax: commas are doubled, so a path or name can
/// never end one option and start another (`path=x,server=on`).
pub(crate) fn option_value(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    #[test]
    fn commas_are_doubled() {
        assert_eq!(super::option_value("a,b,,c"), "a,,b,,,,c");
        assert_eq!(super::option_value("/tmp/x"), "/tmp/x");
    }
}
