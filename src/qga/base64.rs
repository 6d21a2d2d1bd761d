//! Standard base64 (RFC 4648, with padding), the encoding of the agent's `buf-b64`,
//! `input-data`, `out-data` and `err-data`.
//!
//! Written here rather than taken from a crate: the agent only ever needs the standard
//! alphabet, padded, and a decoder that can stop at a byte cap (so a capped `exec` capture
//! never allocates what it will throw away). That is forty lines, tested below.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` as padded standard base64.
pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes padded standard base64, keeping at most `cap` bytes. Returns the bytes and whether
/// the text held more than `cap`. Whitespace is skipped; anything else outside the alphabet,
/// or padding in the middle, is an error.
pub(crate) fn decode_capped(text: &str, cap: usize) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::with_capacity((text.len() / 4 * 3).min(cap));
    let mut acc = 0u32;
    let mut bits = 0;
    let mut padding = 0;
    for (pos, c) in text.bytes().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        let Some(v) = value(c) else {
            return Err(format!("invalid base64 byte 0x{c:02x} at offset {pos}"));
        };
        if padding > 0 {
            return Err(format!("base64 data after padding at offset {pos}"));
        }
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            if out.len() == cap {
                return Ok((out, true));
            }
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if padding > 2 {
        return Err("too much base64 padding".into());
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in 0..70 {
            let text = encode(&data[..len]);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(
                decode_capped(&text, usize::MAX).unwrap(),
                (data[..len].to_vec(), false)
            );
        }
    }

    #[test]
    fn known_vectors() {
        // RFC 4648 section 10.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode_capped(coded, 100).unwrap().0, plain.as_bytes());
        }
    }

    #[test]
    fn caps_and_reports_truncation() {
        assert_eq!(
            decode_capped("Zm9vYmFy", 4).unwrap(),
            (b"foob".to_vec(), true)
        );
        assert_eq!(
            decode_capped("Zm9vYmFy", 6).unwrap(),
            (b"foobar".to_vec(), false)
        );
        assert_eq!(decode_capped("Zm9vYmFy", 0).unwrap(), (Vec::new(), true));
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_capped("Zm9v!", 10).is_err());
        assert!(decode_capped("Zg==Zg==", 10).is_err());
        assert!(decode_capped("Z===", 10).is_err());
    }
}
