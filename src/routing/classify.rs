//! What a chat request is about, so `model: auto` can pick the backend with the best benchmark score for it.
//!
//! This runs on every `auto` request, so it is a scoring heuristic, not a model: one pass over the bytes, no
//! regexes and no allocation; each word is folded to lower case in a stack buffer and looked up in static
//! `match` tables. The caller passes the text of the last user message only: that is the turn being answered,
//! and earlier turns would let a long pasted log outvote the actual question. Only its first [`SCAN_LIMIT`]
//! bytes are read: the domain is nearly always evident from the opening, and a fixed bound keeps the cost flat
//! for huge pastes. The cut is on bytes, so it may split a UTF-8 character; non-ASCII bytes never take part in a
//! signal, so that is harmless.
//!
//! Three scores are kept. Code wins if it is highest (ties with math go to code, since code is full of numbers
//! and operators), math if it beats general, otherwise general. General starts at 2 so a request has to earn a
//! specialist: one weak word is not enough, a strong word or two weak ones are.
//!
//! - Code: fenced blocks (4) and operator pairs that prose and arithmetic do not use, like `=>`, `::`, `!=`,
//!   `</` (2 each); `;` or `{` ending a line and indented lines (2), `()` (2), `#include` (3), and `name(`,
//!   `a.b`, a line ending in `:` and inline backticks (1). Words: language, tool and error names and syntax
//!   keywords are strong (3); programming vocabulary like "function" or "database" is weak (2). `C++`, `C#`,
//!   mid-sentence `Go`, big-O and upper-case SQL keywords are matched case-sensitively, because their
//!   lower-case forms are ordinary words.
//! - Math: LaTeX commands (3), exponents `x^2` and percentages `6%` (2), coefficients like `3x` (2), an
//!   operator between operands with a digit on one side (1) or both (2), `$` before a digit (1), and one point
//!   per number up to 4, because prose mentions years and counts too. Words as for code.
//! - General: genre words ("poem", "recipe", "history", "translate", ...) add 3, which is what keeps "a poem
//!   about Python the snake" or "the history of C" away from code.
//!
//! Known blind spots: conceptual programming questions with no technical vocabulary ("shallow vs deep copy"),
//! and prose full of percentages (news summaries) reads as math. On `tests/fixtures/domains.jsonl` the Python
//! prototype this was ported from scored 185/189.

/// Bytes of the message that are read.
pub const SCAN_LIMIT: usize = 4096;
/// A word that nearly always means its domain.
const STRONG: i32 = 3;
/// A word that leans towards its domain but is also everyday English.
const WEAK: i32 = 2;
/// The score a specialist domain has to beat.
const GENERAL_BASE: i32 = 2;
/// Most numbers a text can score; years, counts and prices are common outside math.
const NUMBERS_CAP: i32 = 4;
/// Longer than any listed word.
const MAX_WORD: usize = 24;

/// Operator pairs that prose and arithmetic do not use.
const CODE_PAIRS: [[u8; 2]; 12] = [
    *b"=>", *b"->", *b"::", *b"!=", *b"==", *b"&&", *b"||", *b"</", *b"/>", *b"#[", *b"+=", *b"${",
];
const NOTHING: (i32, i32, i32) = (0, 0, 0);

// The word tables are matches, not slices: rustc turns them into a switch on length and byte compares, and a
// word listed twice is an unreachable pattern. Laid out by hand, because rustfmt would put one word per line.

/// What a listed lower-case word gives to (code, math, general). The tables are disjoint, and no word is
/// another's plural, so one hit is the whole answer.
#[rustfmt::skip]
fn listed(w: &[u8]) -> (i32, i32, i32) {
    match w {
        // Languages, tools, error names and syntax keywords.
        b"angular" | b"api" | b"async" | b"await" | b"awk" | b"bash" | b"cargo" | b"clang" | b"compile" | b"compiler" |
        b"compiling" | b"const" | b"css" | b"curl" | b"debug" | b"debugging" | b"def" | b"div" | b"django" | b"docker" |
        b"dockerfile" | b"elif" | b"eslint" | b"flask" | b"fn" | b"func" | b"gcc" | b"git" | b"github" | b"gitlab" |
        b"golang" | b"grep" | b"haskell" | b"html" | b"impl" | b"java" | b"javascript" | b"json" | b"junit" |
        b"kotlin" | b"kubectl" | b"kubernetes" | b"linux" | b"mutex" | b"mysql" | b"nginx" | b"npm" |
        b"nullpointerexception" | b"nullptr" | b"numpy" | b"pandas" | b"perl" | b"php" | b"pip" | b"postgres" |
        b"postgresql" | b"powershell" | b"printf" | b"println" | b"pytest" | b"python" | b"react" | b"refactor" |
        b"regex" | b"regexp" | b"repo" | b"ruby" | b"rust" | b"scala" | b"sed" | b"segfault" | b"sql" | b"sqlite" |
        b"stderr" | b"stdout" | b"swift" | b"traceback" | b"typeerror" | b"typescript" | b"vim" | b"void" | b"vue" |
        b"xml" | b"yaml" | b"zsh" => (STRONG, 0, 0),
        // Programming vocabulary that is also everyday English.
        b"app" | b"array" | b"backend" | b"bool" | b"boolean" | b"bug" | b"class" | b"cli" | b"code" | b"command" |
        b"commit" | b"component" | b"config" | b"database" | b"dependency" | b"deploy" | b"dict" | b"directory" |
        b"endpoint" | b"enum" | b"error" | b"exception" | b"file" | b"framework" | b"frontend" | b"function" |
        b"generic" | b"heap" | b"hook" | b"http" | b"implement" | b"import" | b"index" | b"install" | b"int" |
        b"interface" | b"iterator" | b"kernel" | b"keyword" | b"lambda" | b"library" | b"loop" | b"merge" | b"method" |
        b"module" | b"node" | b"null" | b"package" | b"pointer" | b"program" | b"programming" | b"query" |
        b"recursion" | b"recursive" | b"runtime" | b"schema" | b"script" | b"server" | b"stack" | b"string" |
        b"struct" | b"syntax" | b"terminal" | b"thread" | b"trait" | b"undefined" | b"unit" | b"variable" |
        b"workflow" => (WEAK, 0, 0),
        // Mathematical terms.
        b"algebra" | b"angle" | b"binomial" | b"calculus" | b"combination" | b"compounded" | b"converge" |
        b"convergent" | b"derivative" | b"determinant" | b"deviation" | b"diameter" | b"differentiate" | b"divisible" |
        b"eigenvalue" | b"equation" | b"fraction" | b"gcd" | b"geometry" | b"hexagon" | b"hypotenuse" | b"induction" |
        b"inequality" | b"integral" | b"integrate" | b"interest" | b"irrational" | b"lcm" | b"lemma" | b"logarithm" |
        b"matrix" | b"median" | b"mortgage" | b"percent" | b"percentage" | b"perimeter" | b"permutation" | b"polygon" |
        b"polynomial" | b"prime" | b"probability" | b"proof" | b"prove" | b"radius" | b"simplify" | b"solve" | b"sqrt" |
        b"theorem" | b"triangle" | b"variance" | b"vector" => (0, STRONG, 0),
        // Words that are often, but not only, arithmetic.
        b"area" | b"average" | b"calculate" | b"coin" | b"compute" | b"degree" | b"dice" | b"die" | b"divide" |
        b"divided" | b"evaluate" | b"expected" | b"factor" | b"infinity" | b"integer" | b"limit" | b"log" | b"mean" |
        b"minus" | b"multiply" | b"odds" | b"plus" | b"ratio" | b"root" | b"sequence" | b"series" | b"square" | b"sum" |
        b"times" | b"volume" => (0, WEAK, 0),
        // Genres and everyday tasks, which outweigh a passing "Python" or "Java".
        b"advice" | b"birthday" | b"book" | b"email" | b"essay" | b"film" | b"gift" | b"haiku" | b"historical" |
        b"history" | b"itinerary" | b"letter" | b"limerick" | b"lyrics" | b"movie" | b"novel" | b"plot" | b"poem" |
        b"poetry" | b"recipe" | b"song" | b"speech" | b"story" | b"summarize" | b"summary" | b"toast" | b"translate" |
        b"travel" | b"trip" | b"vacation" | b"wedding" => (0, 0, STRONG),
        _ => NOTHING,
    }
}

/// Written in capitals these are SQL; in lower case they are English, so the match is case-sensitive.
#[rustfmt::skip]
fn sql_keyword(w: &[u8]) -> bool {
    matches!(
        w,
        b"DELETE" | b"FROM" | b"GROUP" | b"HAVING" | b"INNER" | b"INSERT" | b"JOIN" | b"LEFT" | b"ORDER" | b"SELECT" |
        b"UPDATE" | b"WHERE"
    )
}

/// Counted only right after a backslash, where these are LaTeX.
#[rustfmt::skip]
fn latex_command(w: &[u8]) -> bool {
    matches!(
        w,
        b"alpha" | b"beta" | b"binom" | b"cdot" | b"cos" | b"exists" | b"forall" | b"frac" | b"ge" | b"geq" | b"in" |
        b"infty" | b"int" | b"le" | b"left" | b"leq" | b"lim" | b"ln" | b"log" | b"mathbb" | b"mathrm" | b"partial" |
        b"pi" | b"prod" | b"right" | b"sin" | b"sqrt" | b"sum" | b"tan" | b"theta" | b"times" | b"to"
    )
}

/// The domain a request is scored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    Code,
    Math,
    General,
}

impl Domain {
    /// The name used in configuration and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Code => "code",
            Domain::Math => "math",
            Domain::General => "general",
        }
    }

    /// The inverse of [`as_str`](Self::as_str); names are lower case.
    pub fn parse(s: &str) -> Option<Domain> {
        match s {
            "code" => Some(Domain::Code),
            "math" => Some(Domain::Math),
            "general" => Some(Domain::General),
            _ => None,
        }
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Where the run of word bytes starting at `from` ends.
fn word_end(b: &[u8], from: usize) -> usize {
    from + b[from..].iter().take_while(|&&c| is_word(c)).count()
}

/// `points` if the signal is present: keeps each signal to one line.
fn when(present: bool, points: i32) -> i32 {
    if present { points } else { 0 }
}

/// Plurals fold onto the listed word ("mutexes", "primes") so the tables stay short. `w` is lower case.
fn word_points(w: &[u8]) -> (i32, i32, i32) {
    let n = w.len();
    let mut points = listed(w);
    if points == NOTHING && n > 3 && w[n - 1] == b's' {
        points = listed(&w[..n - 1]);
    }
    if points == NOTHING && n > 4 && w.ends_with(b"es") {
        points = listed(&w[..n - 2]);
    }
    points
}

/// An operator at `i` between operands (spaces skipped) scores one per side that is a digit; `i + 1` in code
/// scores too, which is why code wins ties.
fn arithmetic(b: &[u8], i: usize) -> i32 {
    let l = i - b[..i].iter().rev().take_while(|&&c| c == b' ').count();
    let r = i + 1 + b[i + 1..].iter().take_while(|&&c| c == b' ').count();
    let lc = b.get(l.wrapping_sub(1)).copied().unwrap_or(0);
    let rc = b.get(r).copied().unwrap_or(0);
    let operands = (lc.is_ascii_alphanumeric() || lc == b')') && (rc.is_ascii_alphanumeric() || rc == b'(');
    let digits = i32::from(lc.is_ascii_digit()) + i32::from(rc.is_ascii_digit());
    when(operands, digits)
}

/// The domain of a user message; see the module docs for how it is scored.
pub fn classify(text: &str) -> Domain {
    let b = &text.as_bytes()[..text.len().min(SCAN_LIMIT)];
    let n = b.len();
    // Out of range reads as 0, which no signal matches except "end of text".
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let (mut code, mut math, mut numbers, mut general) = (0, 0, 0, GENERAL_BASE);
    let mut i = 0;
    while i < n {
        let c = b[i];
        let prev = at(i.wrapping_sub(1));
        let next = at(i + 1);
        if c.is_ascii_digit() {
            // Decimals are one number; a single trailing letter is a coefficient (`3x`), longer ones units.
            let mut k = i;
            while k < n && (b[k].is_ascii_digit() || (b[k] == b'.' && at(k + 1).is_ascii_digit())) {
                k += 1;
            }
            let j = word_end(b, k);
            numbers += when(j == k, 1);
            math += when(j == k + 1 && b[k].is_ascii_alphabetic(), 2);
            i = j;
            continue;
        }
        if is_word(c) {
            let j = word_end(b, i);
            let (w, after) = (&b[i..j], at(j));
            // Folded once into a stack buffer; no listed word is this long, so longer words match nothing.
            let mut buf = [0u8; MAX_WORD];
            let lower: &[u8] = if w.len() <= MAX_WORD {
                buf[..w.len()].copy_from_slice(w);
                buf[..w.len()].make_ascii_lowercase();
                &buf[..w.len()]
            } else {
                &[]
            };
            if prev == b'\\' {
                math += when(latex_command(lower), 3);
            } else if prev == b'#' && w == b"include" {
                code += STRONG;
            } else {
                code += when(sql_keyword(w), 2);
                code += when(w.eq_ignore_ascii_case(b"c") && matches!(after, b'+' | b'#'), STRONG);
                // "Go" opening a sentence is the verb.
                let sentence_start = matches!(at(i.wrapping_sub(2)), b'.' | b'!' | b'?' | 0);
                code += when(w == b"Go" && !sentence_start, STRONG);
                code += when(w == b"O" && after == b'(', 3); // big-O
                code += when(w.len() >= 3 && after == b'(', 1); // a call
                let points = word_points(lower);
                code += points.0;
                math += points.1;
                general += points.2;
            }
            i = j;
            continue;
        }
        if c == b'`' && b[i..].starts_with(b"```") {
            code += 4;
            i += 3;
            continue;
        }
        if CODE_PAIRS.contains(&[c, next]) {
            code += 2;
            i += 2;
            continue;
        }
        match c {
            b'`' => code += 1,
            b';' | b'{' if matches!(next, b'\n' | b'\r' | 0) => code += 2,
            b':' if matches!(next, b'\n' | b'\r') => code += 1,
            b'\n' if b[i + 1..].starts_with(b"    ") || next == b'\t' => code += 2,
            b'(' if next == b')' => code += 2,
            b'.' if prev.is_ascii_alphabetic() && next.is_ascii_alphabetic() => code += 1,
            b'^' if is_word(prev) => math += 2,
            b'%' if prev.is_ascii_digit() => math += 2,
            b'$' if next.is_ascii_digit() => math += 1,
            b'+' | b'-' | b'*' | b'/' | b'=' | b'<' | b'>' => math += arithmetic(b, i),
            _ => {}
        }
        i += 1;
    }
    let math = math + numbers.min(NUMBERS_CAP);
    if code >= math && code > general {
        Domain::Code
    } else if math > general {
        Domain::Math
    } else {
        Domain::General
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_cases() {
        let cases = [
            ("```rust\nfn main() {\n    println!(\"hi\");\n}\n```", Domain::Code),
            ("My Rust program panics with index out of bounds", Domain::Code),
            ("How do mutexes prevent data races?", Domain::Code),
            ("Solve for x: 2x + 3 = 11", Domain::Math),
            ("\\int_0^1 x^2 \\, dx", Domain::Math),
            ("What is 12% of 50?", Domain::Math),
            ("Write a poem about Python the snake.", Domain::General),
            ("What is the history of the C language?", Domain::General),
            ("", Domain::General),
        ];
        for (text, want) in cases {
            assert_eq!(classify(text), want, "{text:?}");
            assert_eq!(Domain::parse(want.as_str()), Some(want));
        }
        assert_eq!(Domain::parse("Code"), None);
    }

    #[test]
    fn reads_only_the_head() {
        let tail_code = format!("{}```fn main() {{}}```", "a ".repeat(SCAN_LIMIT / 2));
        assert_eq!(classify(&tail_code), Domain::General);
        // The cut lands inside a two-byte character; bytes are never decoded, so nothing panics.
        assert_eq!(classify(&format!("a{}", "é".repeat(SCAN_LIMIT))), Domain::General);
    }

    #[test]
    fn labelled_sample_accuracy() {
        let sample = include_str!("../../tests/fixtures/domains.jsonl");
        let domains = [Domain::Code, Domain::Math, Domain::General];
        // confusion[want][got], indexed like `domains`.
        let mut confusion = [[0usize; 3]; 3];
        for line in sample.lines().filter(|l| !l.trim().is_empty()) {
            let row = serde_json::from_str::<serde_json::Value>(line).expect("one JSON object per line");
            let text = row["text"].as_str().expect("a text");
            let want = Domain::parse(row["domain"].as_str().expect("a domain")).expect("a known domain");
            confusion[want as usize][classify(text) as usize] += 1;
        }
        let total: usize = confusion.iter().flatten().sum();
        let right: usize = confusion.iter().enumerate().map(|(d, row)| row[d]).sum();
        let accuracy = right as f64 / total as f64;
        println!("accuracy {right}/{total} = {accuracy:.3}; rows want, columns got [code, math, general]");
        for (d, row) in domains.iter().zip(&confusion) {
            println!("{:>7} {row:?}", d.as_str());
        }
        assert!(total >= 150, "only {total} labelled prompts");
        assert!(accuracy >= 0.95, "accuracy {accuracy:.3} is under 0.95");
    }
}
