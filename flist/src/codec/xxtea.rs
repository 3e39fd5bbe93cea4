//! XXTEA (Wheeler and Needham's corrected Block TEA) with the byte framing
//! 0-fs chunks use: the plaintext as little-endian 32-bit words followed by
//! one word holding its length in bytes; the ciphertext is all the words,
//! little-endian; the key is the first 16 bytes of the chunk key.

use crate::error::{Result, corrupt};

const DELTA: u32 = 0x9e37_79b9;

fn mx(sum: u32, y: u32, z: u32, p: usize, e: u32, k: &[u32; 4]) -> u32 {
    (((z >> 5) ^ (y << 2)).wrapping_add((y >> 3) ^ (z << 4)))
        ^ ((sum ^ y).wrapping_add(k[(p & 3) ^ e as usize] ^ z))
}

fn rounds(n: usize) -> u32 {
    6 + 52 / n as u32
}

fn encrypt_words(v: &mut [u32], k: &[u32; 4]) {
    let n = v.len();
    if n < 2 {
        return;
    }
    let mut sum = 0u32;
    let mut z = v[n - 1];
    for _ in 0..rounds(n) {
        sum = sum.wrapping_add(DELTA);
        let e = (sum >> 2) & 3;
        for p in 0..n - 1 {
            let y = v[p + 1];
            v[p] = v[p].wrapping_add(mx(sum, y, z, p, e, k));
            z = v[p];
        }
        let y = v[0];
        v[n - 1] = v[n - 1].wrapping_add(mx(sum, y, z, n - 1, e, k));
        z = v[n - 1];
    }
}

fn decrypt_words(v: &mut [u32], k: &[u32; 4]) {
    let n = v.len();
    if n < 2 {
        return;
    }
    let mut sum = rounds(n).wrapping_mul(DELTA);
    let mut y = v[0];
    while sum != 0 {
        let e = (sum >> 2) & 3;
        for p in (1..n).rev() {
            let z = v[p - 1];
            v[p] = v[p].wrapping_sub(mx(sum, y, z, p, e, k));
            y = v[p];
        }
        let z = v[n - 1];
        v[0] = v[0].wrapping_sub(mx(sum, y, z, 0, e, k));
        y = v[0];
        sum = sum.wrapping_sub(DELTA);
    }
}

fn key_words(key: &[u8]) -> Result<[u32; 4]> {
    let k: &[u8; 16] = key
        .get(..16)
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| corrupt(format!("XXTEA key of {} bytes (needs 16)", key.len())))?;
    Ok(std::array::from_fn(|i| u32::from_le_bytes(k[i * 4..i * 4 + 4].try_into().expect("4"))))
}

/// Encrypt `data` (non-empty) with the first 16 bytes of `key`.
pub fn encrypt(data: &[u8], key: &[u8]) -> Result<Vec<u8>> {
    if data.is_empty() {
        return Err(corrupt("XXTEA: nothing to encrypt"));
    }
    let len = u32::try_from(data.len()).map_err(|_| corrupt("XXTEA: data over 4 GiB"))?;
    let k = key_words(key)?;
    let mut v: Vec<u32> = data
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect();
    v.push(len);
    encrypt_words(&mut v, &k);
    Ok(v.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// Decrypt what [`encrypt`] made; a wrong key or damaged data almost always
/// shows as an impossible length word and is an error.
pub fn decrypt(data: &[u8], key: &[u8]) -> Result<Vec<u8>> {
    if data.len() < 8 || data.len() % 4 != 0 {
        return Err(corrupt(format!(
            "XXTEA: {} bytes is not a ciphertext (a multiple of 4, at least 8)",
            data.len()
        )));
    }
    let k = key_words(key)?;
    let mut v: Vec<u32> =
        data.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect();
    decrypt_words(&mut v, &k);
    let room = (v.len() - 1) * 4;
    let len = v[v.len() - 1] as usize;
    if len > room || len + 3 < room {
        return Err(corrupt("XXTEA: wrong key or damaged data (bad length word)"));
    }
    let mut out: Vec<u8> = v[..v.len() - 1].iter().flat_map(|w| w.to_le_bytes()).collect();
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_small_lengths() {
        let key = *b"0123456789abcdefEXTRA";
        for n in 1..70usize {
            let data: Vec<u8> = (0..n as u8).map(|b| b.wrapping_mul(37)).collect();
            let c = encrypt(&data, &key).unwrap();
            assert_eq!(c.len(), (n.div_ceil(4) + 1) * 4);
            assert_ne!(&c[..n.min(c.len())], &data[..], "ciphertext differs from plaintext");
            assert_eq!(decrypt(&c, &key).unwrap(), data);
        }
    }

    #[test]
    fn wrong_key_and_bad_sizes_are_errors() {
        let c = encrypt(&[7u8; 100], b"0123456789abcdef").unwrap();
        assert!(decrypt(&c, b"0123456789abcdeX").is_err());
        assert!(decrypt(&c[..c.len() - 1], b"0123456789abcdef").is_err());
        assert!(decrypt(&c[..4], b"0123456789abcdef").is_err());
        assert!(decrypt(&c, b"short").is_err());
        assert!(encrypt(b"", b"0123456789abcdef").is_err());
    }

    /// Reference vector: the textbook XXTEA of two zero words under the
    /// all-zero key is 0x053704ab 0x575d8c80 (Wheeler & Needham's
    /// corrected Block TEA with DELTA 0x9e3779b9, 6 + 52/n rounds).
    #[test]
    fn matches_the_published_test_vector() {
        let mut v = [0u32, 0];
        encrypt_words(&mut v, &[0; 4]);
        assert_eq!(v, [0x0537_04ab, 0x575d_8c80]);
        decrypt_words(&mut v, &[0; 4]);
        assert_eq!(v, [0, 0]);
    }
}
