//! Counted nouns for the one-line summaries stages print ("1 shard", "2 shards").

/// `n` and `noun`, with an `s` unless `n` is 1 (every noun the summaries count takes one).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1, "shard"), "1 shard");
        assert_eq!(count(0, "shard"), "0 shards");
        assert_eq!(count(12, "run"), "12 runs");
    }
}
