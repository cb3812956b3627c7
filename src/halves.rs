//! CPU-bound work on a large batch split over two threads: the one shared way to do it.

/// From this many items on, `in_halves` splits the batch: below it, starting a thread costs more
/// than the half of the work it takes over.
pub const MIN_SPLIT: usize = 256;

/// `work(first_index, items)` over `items`, in two halves on two scoped threads once there are
/// `MIN_SPLIT` items or more (the current thread takes the first half), otherwise in one call.
/// The results come back in order. Each half runs in the caller's tracing span, so what it logs
/// keeps the request's fields. A panic in either half is resumed on the caller's thread.
pub fn in_halves<T, R>(items: Vec<T>, work: impl Fn(usize, Vec<T>) -> R + Sync) -> Vec<R>
where
    T: Send,
    R: Send,
{
    let span = tracing::Span::current();
    let work = |first: usize, items: Vec<T>| {
        let _entered = span.enter();
        work(first, items)
    };
    if items.len() < MIN_SPLIT {
        return vec![work(0, items)];
    }
    let mut first = items;
    let second = first.split_off(first.len().div_ceil(2));
    let second_index = first.len();
    std::thread::scope(|scope| {
        let other = scope.spawn(|| work(second_index, second));
        let mine = work(0, first);
        match other.join() {
            Ok(theirs) => vec![mine, theirs],
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_keep_the_order_and_the_indices() {
        for count in [0, 1, MIN_SPLIT - 1, MIN_SPLIT, 1001] {
            let items: Vec<usize> = (0..count).collect();
            let parts = in_halves(items, |first, items| {
                assert!(
                    items
                        .iter()
                        .enumerate()
                        .all(|(offset, &i)| i == first + offset)
                );
                (std::thread::current().id(), items)
            });
            assert_eq!(parts.len(), if count < MIN_SPLIT { 1 } else { 2 });
            if let [(mine, _), (theirs, _)] = &parts[..] {
                assert_ne!(mine, theirs, "the second half runs on another thread");
            }
            let joined: Vec<usize> = parts.into_iter().flat_map(|(_, items)| items).collect();
            assert_eq!(joined, (0..count).collect::<Vec<_>>());
        }
    }
}
