#!/usr/bin/env python3
"""Checks that every declaration in the .proto files carries a comment.

The protos are the API's documentation (generated docs, stubs in other
languages), so every message, enum, enum value, field, oneof, service and
rpc must say what it is: a leading `//` comment directly above it (a block
at the declaration's own indentation, no blank line between) or a trailing
`//` comment on its line. A block at a deeper indentation is the
continuation of the previous line's trailing comment and does not count.
Lines must also stay within 100 characters.

    check_comments.py PROTO_DIR_OR_FILE...

Exits 1 listing every offender as path:line: kind 'name': why. A self-test
on a proto with known gaps runs first, so the checker itself cannot
silently stop finding them.
"""
import os
import re
import sys

MAX_LINE = 100

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
BLOCK = re.compile(r"^\s*(message|enum|service|oneof)\s+(" + IDENT + r")\s*\{")
RPC = re.compile(r"^\s*rpc\s+(" + IDENT + r")\s*\(")
FIELD = re.compile(r"^\s*(?:(?:repeated|optional)\s+)?[A-Za-z_.][A-Za-z0-9_.]*(?:<[^>]*>)?\s+("
                   + IDENT + r")\s*=\s*\d+")
ENUM_VALUE = re.compile(r"^\s*(" + IDENT + r")\s*=\s*-?\d+")
SKIP = re.compile(r"^\s*(syntax|package|import|option|reserved)\b")


def split_comment(line):
    """(code, comment text or None) of one line; // inside a string is code."""
    in_str = None
    for i, ch in enumerate(line):
        if in_str:
            if ch == in_str:
                in_str = None
        elif ch in "\"'":
            in_str = ch
        elif line.startswith("//", i):
            return line[:i], line[i + 2:].strip()
    return line, None


def indent(line):
    return len(line) - len(line.lstrip(" \t"))


def check(path, lines):
    """The offences in one file's lines, as strings."""
    out = []
    scopes = []  # kinds of the open blocks: message, enum, service, oneof
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if len(line) > MAX_LINE:
            out.append("%s:%d: line of %d characters, over %d" % (path, n, len(line), MAX_LINE))
        code, trailing = split_comment(line)
        if not code.strip() or SKIP.match(code):
            continue
        what = None
        m = BLOCK.match(code)
        if m:
            what = (m.group(1), m.group(2))
        elif RPC.match(code):
            what = ("rpc", RPC.match(code).group(1))
        elif scopes and scopes[-1] == "enum" and ENUM_VALUE.match(code):
            what = ("enum value", ENUM_VALUE.match(code).group(1))
        elif FIELD.match(code):
            what = ("field", FIELD.match(code).group(1))
        if what and not trailing and not leading_comment(lines, n - 1, indent(line)):
            scope = "" if not scopes else " (in a %s)" % scopes[-1]
            out.append("%s:%d: %s '%s'%s has no comment above it or on its line"
                       % (path, n, what[0], what[1], scope))
        for ch in code:
            if ch == "{":
                scopes.append(m.group(1) if m else "block")
                m = None
            elif ch == "}" and scopes:
                scopes.pop()
    return out


def leading_comment(lines, index, col):
    """Whether lines[index] (0-based, the declaration) has a comment block
    directly above it at indentation col with some text in it."""
    text = False
    k = index - 1
    while k >= 0:
        code, comment = split_comment(lines[k].rstrip("\n"))
        if comment is None or code.strip() or indent(lines[k]) != col:
            break
        text = text or bool(comment)
        k -= 1
    return text


SELF_TEST = """syntax = "proto3";
package t;

// Documented.
message Good {
  string a = 1;         // trailing
  // leading
  repeated string b = 2;
  map<string, int32> c = 3; // a map
}

message Bare {
  string a = 1;         // trailing, then a continuation
                        // of it that must not count for the next field
  string b = 2;
  //
  int32 c = 3;

  // a blank line between does not count
  // (above it)

  uint64 d = 4;
  enum Kind {           // an enum
    NONE = 0;
    ONE = 1;            // one
  }
  oneof msg {
    string e = 5;
  }
}

// The service.
service S {
  rpc Go(Good) returns (Bare);
}
"""
SELF_TEST_EXPECTED = [
    "message 'Bare'", "field 'b'", "field 'c'", "field 'd'", "enum value 'NONE'", "oneof 'msg'",
    "field 'e'", "rpc 'Go'",
]


def self_test():
    found = check("self-test.proto", SELF_TEST.splitlines(True))
    got = [re.sub(r"^self-test\.proto:\d+: (.*?)(?: \(in a \w+\))? has no comment.*$", r"\1", f)
           for f in found]
    if got != SELF_TEST_EXPECTED:
        sys.stderr.write("check_comments.py self-test failed:\n  expected %s\n  got      %s\n"
                         % (SELF_TEST_EXPECTED, found))
        return False
    return True


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    if not self_test():
        return 1
    files = []
    for arg in argv[1:]:
        if os.path.isdir(arg):
            for root, _, names in os.walk(arg):
                files += [os.path.join(root, f) for f in names if f.endswith(".proto")]
        else:
            files.append(arg)
    if not files:
        sys.stderr.write("no .proto files under %s\n" % " ".join(argv[1:]))
        return 1
    bad = []
    for path in sorted(files):
        with open(path, encoding="utf-8") as f:
            bad += check(path, f.readlines())
    for b in bad:
        print(b)
    print("%d .proto files, %d offences" % (len(files), len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
