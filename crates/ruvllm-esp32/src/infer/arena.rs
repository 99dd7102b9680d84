//! Carving one caller-provided arena into the disjoint buffers of a forward pass, for both the
//! float ([`super::State`], f32 words) and the integer ([`super::IntState`], i32 words) paths.

/// Hands out disjoint slices of the arena. Nothing is cleared: every buffer is written before
/// it is read (the KV cache up to the current position included), and leaving untouched pages
/// alone keeps a fresh arena from being faulted in all at once.
pub(crate) struct Carver<'s, W>(pub &'s mut [W]);

impl<'s, W: bytemuck::Pod> Carver<'s, W> {
    /// The next `n` words.
    pub fn words(&mut self, n: usize) -> &'s mut [W] {
        let (head, tail) = core::mem::take(&mut self.0).split_at_mut(n);
        self.0 = tail;
        head
    }

    /// The next `n` bytes as int8, rounded up to whole words.
    pub fn i8(&mut self, n: usize) -> &'s mut [i8] {
        let words = self.words(n.div_ceil(core::mem::size_of::<W>()));
        &mut bytemuck::cast_slice_mut::<W, i8>(words)[..n]
    }
}
