//! Counted nouns for the one-line summaries stages print ("1 shard", "2 shards").

/// `n` and `noun`, in the plural unless `n` is 1: an `s`, or `ies` for a consonant and `y`
/// ("entry", "entries"). Enough for the nouns the summaries count.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 || noun.ends_with("series") {
        return format!("{n} {noun}");
    }
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_is_its_own_plural() {
        assert_eq!(count(2, "CT series"), "2 CT series");
        assert_eq!(count(1, "series"), "1 series");
    }

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1, "shard"), "1 shard");
        assert_eq!(count(0, "shard"), "0 shards");
        assert_eq!(count(12, "run"), "12 runs");
        assert_eq!(count(3, "rejected entry"), "3 rejected entries");
        assert_eq!(count(2, "day"), "2 days");
    }
}
