//! Multi-precision integers as little-endian 32-bit words (wasm multiplies two of them natively
//! into 64 bits), shared by the P-256 field and RSA.

/// `t = a²`, for `t` all zeros and at least twice as long as `a`: the products a_i·a_j (i < j)
/// once, doubled, then the squares a_i² added (about half the multiplications of a·a).
#[inline(always)]
pub fn square_into(a: &[u32], t: &mut [u32]) {
    let len = a.len();
    for (i, &a_i) in a.iter().enumerate() {
        let a_i = u64::from(a_i);
        let mut carry = 0u64;
        for (t_k, &a_j) in t.iter_mut().skip(2 * i + 1).zip(a.iter().skip(i + 1)) {
            let x = u64::from(*t_k) + a_i * u64::from(a_j) + carry;
            *t_k = x as u32;
            carry = x >> 32;
        }
        if let Some(top) = t.get_mut(i + len) {
            *top = carry as u32;
        }
    }
    // Doubled: the cross products sum to less than a²/2, so no bit leaves the 2·len words.
    let mut high_bit = 0u32;
    for t_k in t.iter_mut() {
        let next = *t_k >> 31;
        *t_k = (*t_k << 1) | high_bit;
        high_bit = next;
    }
    let mut carry = 0u64;
    for (k, t_k) in t.iter_mut().enumerate() {
        let a_i = u64::from(a.get(k / 2).copied().unwrap_or(0));
        let square = a_i * a_i;
        let half = if k % 2 == 0 {
            square & 0xffff_ffff
        } else {
            square >> 32
        };
        let x = u64::from(*t_k) + half + carry;
        *t_k = x as u32;
        carry = x >> 32;
    }
}

/// `a += b` modulo 2^(32·len); whether a carry left the top word.
#[inline(always)]
pub fn add_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut carry = 0u64;
    for (a_j, &b_j) in a.iter_mut().zip(b) {
        let x = u64::from(*a_j) + u64::from(b_j) + carry;
        *a_j = x as u32;
        carry = x >> 32;
    }
    carry != 0
}

/// `a -= b` modulo 2^(32·len); whether it borrowed (b was above a).
#[inline(always)]
pub fn sub_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut borrow = 0u64;
    for (a_j, &b_j) in a.iter_mut().zip(b) {
        let x = u64::from(*a_j)
            .wrapping_sub(u64::from(b_j))
            .wrapping_sub(borrow);
        *a_j = x as u32;
        borrow = (x >> 63) & 1;
    }
    borrow != 0
}
