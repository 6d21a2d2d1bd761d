//! A tiny x86 real-mode boot-sector guest that tests build for themselves.
//!
//! [`boot_sector`] hand-assembles a 512-byte boot sector (no assembler, no
//! downloaded images) that SeaBIOS loads at `0000:7c00` on QEMU's `pc`
//! machine. The guest writes a banner line to COM1 and then does one
//! [`GuestAction`]: power off through ACPI, echo the serial port, exit QEMU
//! through `isa-debug-exit`, or halt forever. That covers the ways a real
//! guest can end (or not end) without needing a kernel or a disk image.
//!
//! ```no_run
//! use qm::guest::{qemu_args, write_image, GuestAction};
//! let img = std::env::temp_dir().join("guest-example.img");
//! write_image(&img, "guest up", GuestAction::Poweroff)?;
//! let status = std::process::Command::new("qemu-system-x86_64")
//!     .args(qemu_args(&img))
//!     .args(["-display", "none", "-serial", "stdio"])
//!     .status()?;
//! assert!(status.success());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! SeaBIOS itself prints nothing on COM1 with [`qemu_args`] (its debug log
//! goes to I/O port 0x402, not the UART), so the first serial output is the
//! banner line.

use std::io;
use std::path::Path;

/// What the guest does after writing its banner line to COM1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAction {
    /// Power the machine off through ACPI (PIIX4 PM1a_CNT: `outw 0x2000` to
    /// port 0x604), which QEMU reports as a `SHUTDOWN` event with
    /// `"guest": true`, reason `"guest-shutdown"`; QEMU then exits with
    /// status 0 (unless run with `-no-shutdown`).
    Poweroff,
    /// Echo every byte read from COM1 back to COM1, except two command
    /// bytes, which are consumed without being echoed: `b'p'` powers off (as
    /// [`GuestAction::Poweroff`]) and `b'x'` exits QEMU through
    /// `isa-debug-exit` with value 1 (QEMU's exit status is then
    /// `(1 << 1) | 1 = 3`). Bytes are never lost, even ones sent before the
    /// guest runs: QEMU's UART only takes host input when its receive buffer
    /// has room, so bursts are throttled rather than dropped.
    Echo,
    /// Exit QEMU at once through `isa-debug-exit` with this value; QEMU's
    /// exit status is `(v << 1) | 1`, truncated to 8 bits by the OS (see
    /// [`debug_exit_status`]).
    Exit(u8),
    /// Halt forever (`cli; hlt` loop): a guest that never stops by itself.
    Halt,
}

/// Longest banner [`boot_sector`] accepts, in bytes (the banner is followed
/// by `"\r\n"` and must fit between the code and the boot signature).
pub const MAX_BANNER_LEN: usize = SIGNATURE_OFFSET - BANNER_OFFSET - 2;

/// The process exit status QEMU reports when the guest writes `value` to
/// `isa-debug-exit`: QEMU calls `exit((value << 1) | 1)` and the OS keeps
/// only the low 8 bits.
pub const fn debug_exit_status(value: u8) -> i32 {
    (((value as i32) << 1) | 1) & 0xff
}

/// The QEMU arguments (after the binary) that boot an image written by
/// [`write_image`]. They do not include `-display`, `-serial` or `-monitor`,
/// which the caller adds (`-display none -serial stdio` is enough).
///
/// - `-nodefaults` drops the default NIC (so QEMU does not need its iPXE
///   option ROM file installed), VGA, CD-ROM, floppy, serial and monitor;
///   the caller's explicit `-serial` still creates COM1 at 0x3f8.
/// - The image is the first IDE disk, the first device in QEMU's default
///   boot order (floppy boots too, but no faster).
/// - `isa-debug-exit` at 0xf4 lets [`GuestAction::Exit`] and the Echo
///   guest's `b'x'` end QEMU with a chosen status.
///
/// A comma in the path is doubled, as QEMU's option syntax requires. The
/// path is converted lossily, so it should be valid UTF-8.
pub fn qemu_args(image: &Path) -> Vec<String> {
    let file = crate::opts::option_value(&image.to_string_lossy());
    [
        "-nodefaults",
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-drive",
        &format!("file={file},format=raw,if=ide,index=0,media=disk"),
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Write the boot sector for `banner` and `action` to `path` as a raw disk
/// image, replacing any existing file.
///
/// Unlike [`boot_sector`] this does not panic on an overlong banner: it
/// returns an [`io::ErrorKind::InvalidInput`] error instead.
pub fn write_image(path: &Path, banner: &str, action: GuestAction) -> io::Result<()> {
    let sector = try_boot_sector(banner, action)
        .map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
    std::fs::write(path, sector)
}

/// Build the 512-byte boot sector: it writes `banner` followed by `"\r\n"`
/// to COM1 (port 0x3f8, polling LSR 0x3fd bit 5 before each byte), then
/// performs `action`.
///
/// The banner may contain any bytes (its length is stored, it is not
/// NUL-terminated).
///
/// # Panics
///
/// If `banner` is longer than [`MAX_BANNER_LEN`] bytes.
pub fn boot_sector(banner: &str, action: GuestAction) -> [u8; 512] {
    match try_boot_sector(banner, action) {
        Ok(sector) => sector,
        Err(msg) => panic!("{msg}"),
    }
}

/// Where BIOSes load the boot sector (and where its addresses are relative to).
const ORG: u16 = 0x7c00;
/// The banner lives at a fixed offset, so the limit does not depend on the action.
const BANNER_OFFSET: usize = 0x80;
/// The BIOS only boots sectors ending in 0x55 0xAA.
const SIGNATURE_OFFSET: usize = 510;

const COM1_DATA: u16 = 0x3f8;
const COM1_LSR: u16 = 0x3fd;
/// LSR bit 0: a received byte is waiting.
const LSR_DATA_READY: u8 = 0x01;
/// LSR bit 5: the transmit holding register can take a byte.
const LSR_THR_EMPTY: u8 = 0x20;
/// PIIX4 PM1a_CNT: SeaBIOS places the PM I/O base at 0x600 on QEMU's `pc`.
const PM1A_CNT: u16 = 0x604;
/// SLP_EN with SLP_TYP 0, which QEMU treats as soft power-off (S5).
const PM1_SLP_EN_S5: u16 = 0x2000;
const DEBUG_EXIT_PORT: u16 = 0xf4;

fn try_boot_sector(banner: &str, action: GuestAction) -> Result<[u8; 512], String> {
    let banner = banner.as_bytes();
    if banner.len() > MAX_BANNER_LEN {
        return Err(format!(
            "guest banner is {} bytes, at most {MAX_BANNER_LEN} fit in a boot sector",
            banner.len()
        ));
    }
    let line_len = banner.len() + 2;
    let code = assemble(line_len, action);
    // The code size is fixed per action; the unit tests cover every action.
    assert!(
        code.len() <= BANNER_OFFSET,
        "guest code overflows into banner"
    );

    let mut sector = [0u8; 512];
    sector[..code.len()].copy_from_slice(&code);
    sector[BANNER_OFFSET..BANNER_OFFSET + banner.len()].copy_from_slice(banner);
    sector[BANNER_OFFSET + banner.len()..BANNER_OFFSET + line_len].copy_from_slice(b"\r\n");
    sector[SIGNATURE_OFFSET..].copy_from_slice(&[0x55, 0xaa]);
    Ok(sector)
}

/// Emit the guest's machine code. The banner line (banner + CRLF, `line_len`
/// bytes) is expected at `BANNER_OFFSET`.
///
/// The UART is used as QEMU leaves it after reset: QEMU's 16550 passes whole
/// bytes whatever the line settings or baud rate, and IER is 0 so no
/// interrupts fire. Enabling the FIFO (FCR 0xc7) would echo bursts about 3x
/// faster, but QEMU flushes the receive buffer when the FIFO is switched on,
/// dropping input the host sent before the guest ran; left alone, that input
/// waits in RBR (QEMU stops reading the host side while RBR is full).
fn assemble(line_len: usize, action: GuestAction) -> Vec<u8> {
    use Label::*;
    let mut a = Asm::default();
    // SeaBIOS jumps to 0000:7c00 with interrupts on and an unknown stack.
    // Only relative jumps/calls are used, so CS:IP = 07c0:0000 would work too.
    a.op(&[0xfa]); //                          cli
    a.op(&[0x31, 0xc0]); //                    xor ax, ax
    a.op(&[0x8e, 0xd8]); //                    mov ds, ax
    a.op(&[0x8e, 0xd0]); //                    mov ss, ax
    a.op_imm16(&[0xbc], ORG); //               mov sp, 0x7c00 ; stack grows below us
    a.op(&[0xfc]); //                          cld            ; lodsb counts up
    a.op_abs16(&[0xbe], Banner); //            mov si, banner
    a.op_imm16(&[0xb9], line_len as u16); //   mov cx, line_len ; >= 2 (CRLF)
    a.label(PrintLoop); //                   print_loop:
    a.op(&[0xac]); //                          lodsb          ; al = [si++]
    a.op_rel16(&[0xe8], Putc); //              call putc
    a.op_rel8(&[0xe2], PrintLoop); //          loop print_loop

    match action {
        GuestAction::Poweroff => a.op_rel8(&[0xeb], Poweroff), // jmp poweroff
        GuestAction::Halt => a.op_rel8(&[0xeb], Halt),         // jmp halt
        GuestAction::Exit(value) => {
            a.op(&[0xb0, value]); //           mov al, value
            a.op_rel8(&[0xeb], Exit); //       jmp exit
        }
        GuestAction::Echo => {
            a.label(EchoLoop); //            echo_loop:
            a.op_rel16(&[0xe8], Getc); //      call getc
            a.op(&[0x3c, b'p']); //            cmp al, 'p'
            a.op_rel8(&[0x74], Poweroff); //   je poweroff
            a.op(&[0x3c, b'x']); //            cmp al, 'x'
            a.op_rel8(&[0x74], EchoExit); //   je echo_exit
            a.op_rel16(&[0xe8], Putc); //      call putc
            a.op_rel8(&[0xeb], EchoLoop); //   jmp echo_loop
            a.label(EchoExit); //            echo_exit:
            a.op(&[0xb0, 1]); //               mov al, 1 ; falls into exit
        }
    }

    // exit: al = value for isa-debug-exit; QEMU exits inside the `out`.
    a.label(Exit);
    a.op_imm16(&[0xba], DEBUG_EXIT_PORT); //   mov dx, 0xf4
    a.op(&[0xee]); //                          out dx, al
    a.op_rel8(&[0xeb], Halt); //               jmp halt ; device missing

    // poweroff: ACPI S5; the write makes QEMU request a guest shutdown, and
    // the CPU idles in halt until QEMU acts on it.
    a.label(Poweroff);
    a.op_imm16(&[0xba], PM1A_CNT); //          mov dx, 0x604
    a.op_imm16(&[0xb8], PM1_SLP_EN_S5); //     mov ax, 0x2000
    a.op(&[0xef]); //                          out dx, ax ; falls into halt

    a.label(Halt); //                        halt:
    a.op(&[0xfa]); //                          cli
    a.op(&[0xf4]); //                          hlt
    a.op_rel8(&[0xeb], Halt); //               jmp halt ; NMI/SMI can wake hlt

    // putc: write al to COM1 once the transmitter has room. Clobbers dx.
    a.label(Putc);
    a.op(&[0x50]); //                          push ax
    a.op_imm16(&[0xba], COM1_LSR); //          mov dx, 0x3fd
    a.label(PutcWait); //                    .wait:
    a.op(&[0xec]); //                          in al, dx
    a.op(&[0xa8, LSR_THR_EMPTY]); //           test al, 0x20
    a.op_rel8(&[0x74], PutcWait); //           jz .wait
    a.op(&[0x58]); //                          pop ax
    a.op_imm16(&[0xba], COM1_DATA); //         mov dx, 0x3f8
    a.op(&[0xee]); //                          out dx, al
    a.op(&[0xc3]); //                          ret

    // getc: busy-wait for a received byte and return it in al. Clobbers dx.
    a.label(Getc);
    a.op_imm16(&[0xba], COM1_LSR); //          mov dx, 0x3fd
    a.label(GetcWait); //                    .wait:
    a.op(&[0xec]); //                          in al, dx
    a.op(&[0xa8, LSR_DATA_READY]); //          test al, 0x01
    a.op_rel8(&[0x74], GetcWait); //           jz .wait
    a.op_imm16(&[0xba], COM1_DATA); //         mov dx, 0x3f8
    a.op(&[0xec]); //                          in al, dx
    a.op(&[0xc3]); //                          ret

    a.labels.push((Banner, BANNER_OFFSET));
    a.finish()
}

/// Jump targets and data addresses in the guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    PrintLoop,
    EchoLoop,
    EchoExit,
    Exit,
    Poweroff,
    Halt,
    Putc,
    PutcWait,
    Getc,
    GetcWait,
    Banner,
}

/// How a label is encoded at a fixup site.
#[derive(Debug, Clone, Copy)]
enum Fixup {
    /// Signed byte relative to the end of the instruction (short jumps, loop).
    Rel8,
    /// Word relative to the end of the instruction (near call).
    Rel16,
    /// Absolute address in the segment (sector offset + ORG).
    Abs16,
}

/// A two-pass assembler just big enough for the guest: emit bytes with
/// placeholder operands, then patch label references in `finish`. Every
/// label operand is the last field of its instruction, so the end of the
/// instruction is the end of the operand.
#[derive(Default)]
struct Asm {
    code: Vec<u8>,
    labels: Vec<(Label, usize)>,
    fixups: Vec<(usize, Label, Fixup)>,
}

impl Asm {
    fn op(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
    }

    fn op_imm16(&mut self, opcode: &[u8], imm: u16) {
        self.op(opcode);
        self.op(&imm.to_le_bytes());
    }

    fn op_label(&mut self, opcode: &[u8], target: Label, kind: Fixup, width: usize) {
        self.op(opcode);
        self.fixups.push((self.code.len(), target, kind));
        self.code.resize(self.code.len() + width, 0);
    }

    fn op_rel8(&mut self, opcode: &[u8], target: Label) {
        self.op_label(opcode, target, Fixup::Rel8, 1);
    }

    fn op_rel16(&mut self, opcode: &[u8], target: Label) {
        self.op_label(opcode, target, Fixup::Rel16, 2);
    }

    fn op_abs16(&mut self, opcode: &[u8], target: Label) {
        self.op_label(opcode, target, Fixup::Abs16, 2);
    }

    fn label(&mut self, label: Label) {
        self.labels.push((label, self.code.len()));
    }

    fn finish(mut self) -> Vec<u8> {
        for &(at, target, kind) in &self.fixups {
            let dest = self
                .labels
                .iter()
                .find(|(l, _)| *l == target)
                .unwrap_or_else(|| panic!("undefined guest label {target:?}"))
                .1 as isize;
            match kind {
                Fixup::Rel8 => {
                    let rel = dest - (at as isize + 1);
                    let rel = i8::try_from(rel).expect("short jump out of range");
                    self.code[at] = rel.to_le_bytes()[0];
                }
                Fixup::Rel16 => {
                    let rel = i16::try_from(dest - (at as isize + 2)).expect("near jump");
                    self.code[at..at + 2].copy_from_slice(&rel.to_le_bytes());
                }
                Fixup::Abs16 => {
                    let addr = ORG + dest as u16;
                    self.code[at..at + 2].copy_from_slice(&addr.to_le_bytes());
                }
            }
        }
        self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [GuestAction; 5] = [
        GuestAction::Poweroff,
        GuestAction::Echo,
        GuestAction::Exit(0),
        GuestAction::Exit(255),
        GuestAction::Halt,
    ];

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn sector_is_bootable_and_holds_banner_line() {
        for action in ALL {
            let s = boot_sector("hello from the guest", action);
            assert_eq!(s.len(), 512);
            assert_eq!(&s[510..], &[0x55, 0xaa]);
            assert_eq!(
                find(&s, b"hello from the guest\r\n"),
                Some(BANNER_OFFSET),
                "{action:?}"
            );
        }
    }

    #[test]
    fn code_fits_below_banner_for_every_action() {
        for action in ALL {
            let code = assemble(MAX_BANNER_LEN + 2, action);
            assert!(code.len() <= BANNER_OFFSET, "{action:?}: {}", code.len());
        }
    }

    #[test]
    fn prologue_encodes_banner_address_and_length() {
        let s = boot_sector("abc", GuestAction::Halt);
        // cli; xor ax,ax; mov ds,ax; mov ss,ax; mov sp,0x7c00; cld
        assert_eq!(
            &s[..11],
            &[0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xfc]
        );
        // mov si, 0x7c80; mov cx, 5 ("abc\r\n")
        assert_eq!(&s[11..17], &[0xbe, 0x80, 0x7c, 0xb9, 0x05, 0x00]);
    }

    #[test]
    fn actions_emit_their_port_writes() {
        let exit = boot_sector("", GuestAction::Exit(5));
        assert!(find(&exit, &[0xb0, 5]).is_some(), "mov al, 5");
        assert!(find(&exit, &[0xba, 0xf4, 0x00, 0xee]).is_some(), "out 0xf4");
        let off = boot_sector("", GuestAction::Poweroff);
        // mov dx, 0x604; mov ax, 0x2000; out dx, ax
        assert!(find(&off, &[0xba, 0x04, 0x06, 0xb8, 0x00, 0x20, 0xef]).is_some());
    }

    #[test]
    fn max_banner_fits_and_longer_is_rejected() {
        let max = "m".repeat(MAX_BANNER_LEN);
        let s = boot_sector(&max, GuestAction::Echo);
        assert_eq!(&s[SIGNATURE_OFFSET - 2..], &[b'\r', b'\n', 0x55, 0xaa]);
        let long = "m".repeat(MAX_BANNER_LEN + 1);
        assert!(try_boot_sector(&long, GuestAction::Echo).is_err());
        let err = write_image(Path::new("/nonexistent/unused"), &long, GuestAction::Echo);
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn boot_sector_panics_on_overlong_banner() {
        boot_sector(&"m".repeat(MAX_BANNER_LEN + 1), GuestAction::Halt);
    }

    #[test]
    fn exit_status_matches_qemu() {
        assert_eq!(debug_exit_status(1), 3);
        assert_eq!(debug_exit_status(5), 11);
        assert_eq!(debug_exit_status(0), 1);
        assert_eq!(debug_exit_status(200), 145);
    }

    #[test]
    fn qemu_args_escape_commas() {
        let args = qemu_args(Path::new("/tmp/a,b.img"));
        assert!(args.contains(&"file=/tmp/a,,b.img,format=raw,if=ide,index=0,media=disk".into()));
    }
}
