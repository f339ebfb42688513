//! Randomness comes in from outside: the [`Entropy`] trait. Components implement it
//! with `getrandom`; tests use [`SplitMix64`], a tiny seeded generator, so every run can
//! be replayed from its printed seed.

/// A source of random bytes supplied by the caller.
pub trait Entropy {
    /// Fills `out` with random bytes.
    fn fill(&mut self, out: &mut [u8]);

    /// Returns `N` random bytes.
    fn bytes<const N: usize>(&mut self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut out = [0_u8; N];
        self.fill(&mut out);
        out
    }
}

/// Any `FnMut(&mut [u8])` is an entropy source, e.g. in a component:
/// `let mut rng = |buf: &mut [u8]| getrandom::getrandom(buf).expect("entropy");`
impl<F: FnMut(&mut [u8])> Entropy for F {
    fn fill(&mut self, out: &mut [u8]) {
        self(out)
    }
}

/// SplitMix64: a seeded, deterministic generator for tests and simulations.
/// NOT cryptographic: never use it for ids or secrets in production.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish value in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
}

impl Entropy for SplitMix64 {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_bytes() {
        // Proves determinism: two generators with one seed agree; another seed differs.
        let (mut a, mut b, mut c) = (SplitMix64::new(7), SplitMix64::new(7), SplitMix64::new(8));
        let x: [u8; 20] = a.bytes();
        assert_eq!(x, b.bytes::<20>());
        assert_ne!(x, c.bytes::<20>());
    }
}
