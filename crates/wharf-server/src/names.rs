//! Which characters a chat name or room may hold: visible ones.
//!
//! Two names that look alike must be the same name, so a name or room may
//! not hold characters that show nothing, or that change how the text
//! around them is shown: `Ada` and `Ada\u{200B}` would look alike, and
//! U+202E would show `txt.exe` for `exe.txt`. Refused, by Unicode general
//! category and by list (Unicode 18, from the `unicode-properties` tables):
//!
//! - control characters (Cc): tab, line feed, escape, ...;
//! - line and paragraph separators (Zl, Zp): U+2028, U+2029;
//! - format characters (Cf): zero-width space U+200B, joiners, the byte
//!   order mark U+FEFF, the bidirectional controls U+202A–U+202E and
//!   U+2066–U+2069, tag characters, ...;
//! - spaces other than U+0020 (Zs): the no-break space looks like a space
//!   and is not one;
//! - other characters that render as nothing: the Hangul fillers, the
//!   braille blank, the combining grapheme joiner, variation selectors,
//!   Khmer inherent vowels and Mongolian variation selectors;
//! - private-use (Co) and unassigned (Cn) code points, which no font shows
//!   alike for everybody.
//!
//! One deliberate exception keeps emoji working: a zero-width joiner
//! between two pictographs (`👩‍💻`), and a variation selector 15 or 16
//! directly after one (`❤️`), are parts of an emoji sequence, not hidden
//! text.

use unicode_properties::emoji::UnicodeEmoji as _;
use unicode_properties::general_category::{GeneralCategory, UnicodeGeneralCategory as _};

const ZWJ: char = '\u{200D}';
const VS15: char = '\u{FE0E}';
const VS16: char = '\u{FE0F}';

/// A character refused in a name or room, and the rule it breaks.
#[derive(Debug, Eq, PartialEq)]
pub(crate) struct Refused {
    pub(crate) ch: char,
    pub(crate) rule: &'static str,
}

/// The first character of `s` that a name or room may not hold.
pub(crate) fn check(s: &str) -> Result<(), Refused> {
    let chars: Vec<char> = s.chars().collect();
    for (i, &ch) in chars.iter().enumerate() {
        if let Some(rule) = rule(ch) {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            if !in_emoji_sequence(ch, prev, next) {
                return Err(Refused { ch, rule });
            }
        }
    }
    Ok(())
}

/// The rule `ch` breaks, if any.
fn rule(ch: char) -> Option<&'static str> {
    use GeneralCategory as C;
    match ch.general_category() {
        C::Control => return Some("a control character"),
        C::LineSeparator | C::ParagraphSeparator => {
            return Some("a line or paragraph separator");
        }
        C::Format => {
            return Some("an invisible formatting character (zero-width, or it reorders text)");
        }
        C::SpaceSeparator if ch != ' ' => return Some("a space other than U+0020"),
        C::PrivateUse => return Some("a private-use character"),
        C::Unassigned | C::Surrogate => return Some("an unassigned code point"),
        _ => {}
    }
    matches!(
        ch,
        '\u{034F}'              // combining grapheme joiner
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'   // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'   // Mongolian variation selectors
        | '\u{2800}'                // braille pattern blank
        | '\u{FE00}'..='\u{FE0F}'   // variation selectors
        | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
    .then_some("an invisible character")
}

/// Whether `ch`, between `prev` and `next`, is a joiner or presentation
/// selector of an emoji sequence.
fn in_emoji_sequence(ch: char, prev: Option<char>, next: Option<char>) -> bool {
    let pictograph = |c: Option<char>| c.is_some_and(|c| !c.is_ascii() && c.is_emoji_char());
    match ch {
        VS15 | VS16 => pictograph(prev),
        // After a pictograph, or after its presentation selector.
        ZWJ => (pictograph(prev) || prev == Some(VS16)) && pictograph(next),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> Option<char> {
        check(s).err().map(|r| r.ch)
    }

    #[test]
    fn visible_names_pass() {
        for name in [
            "Ada",
            "Ada Lovelace",
            "tea room",
            "Åsa Ødegård",
            "Зоя",
            "李小龙",
            "محمد",
            "אדה",
            "देवनागरी",
            "cafe\u{301}", // with a combining acute accent
            "👩‍💻 Ada",
            "❤️",
            "👍🏽",
            "🇫🇷",
        ] {
            assert_eq!(check(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn each_refused_class_names_its_rule() {
        for (s, ch, rule) in [
            ("Ada\u{7}", '\u{7}', "a control character"),
            ("Ada\tB", '\t', "a control character"),
            ("Ada\u{85}", '\u{85}', "a control character"),
            ("A\u{2028}da", '\u{2028}', "a line or paragraph separator"),
            ("A\u{2029}da", '\u{2029}', "a line or paragraph separator"),
            ("Ada\u{200B}", '\u{200B}', "an invisible formatting"),
            ("\u{FEFF}Ada", '\u{FEFF}', "an invisible formatting"),
            ("\u{202E}txt.exe", '\u{202E}', "an invisible formatting"),
            ("Ada\u{2066}", '\u{2066}', "an invisible formatting"),
            ("A\u{200D}da", '\u{200D}', "an invisible formatting"),
            ("Ada\u{E0041}", '\u{E0041}', "an invisible formatting"),
            ("Ada\u{00A0}L", '\u{00A0}', "a space other than U+0020"),
            ("Ada\u{3000}L", '\u{3000}', "a space other than U+0020"),
            ("Ada\u{3164}", '\u{3164}', "an invisible character"),
            ("Ada\u{2800}", '\u{2800}', "an invisible character"),
            ("Ada\u{FE0F}", '\u{FE0F}', "an invisible character"),
            ("Ada\u{034F}", '\u{034F}', "an invisible character"),
            ("Ada\u{E000}", '\u{E000}', "a private-use character"),
            ("Ada\u{F0000}", '\u{F0000}', "a private-use character"),
            ("Ada\u{0378}", '\u{0378}', "an unassigned code point"),
        ] {
            let r = check(s).expect_err(s);
            assert_eq!(r.ch, ch, "{s:?}");
            assert!(r.rule.starts_with(rule), "{s:?}: {}", r.rule);
        }
    }

    #[test]
    fn emoji_joiners_count_only_between_pictographs() {
        assert_eq!(refused("👩\u{200D}💻"), None);
        assert_eq!(refused("❤\u{FE0F}\u{200D}🔥"), None);
        assert_eq!(refused("Ada\u{200D}💻"), Some('\u{200D}'));
        assert_eq!(refused("👩\u{200D}"), Some('\u{200D}'));
        assert_eq!(refused("1\u{FE0F}"), Some('\u{FE0F}'));
        assert_eq!(refused("\u{FE0F}👩"), Some('\u{FE0F}'));
    }
}
