#!/usr/bin/env bash
# Regenerates Sources/Kerberos/KerberosError+Names.swift from the error tables in <krb5/krb5.h>.
set -euo pipefail
header=${1:-/usr/include/krb5/krb5.h}
out=$(dirname "$0")/../Sources/Kerberos/KerberosError+Names.swift
{
    echo '// Generated from the error tables in <krb5/krb5.h> (MIT krb5 1.20): code → symbolic name.'
    echo '// Regenerate with: make error-names'
    echo
    echo 'extension KerberosError {'
    echo '    static let symbolicNames: [Int32: String] = ['
    grep -E '^#define [A-Z0-9_]+ +\(-?[0-9]+L\)' "$header" | grep -v -e PLACEHOLD -e ERROR_TABLE_BASE |
        awk '{v=$3; gsub(/[()L]/,"",v); printf "        %s: \"%s\",\n", v, $2}' | awk '!seen[$1]++'
    echo '    ]'
    echo '}'
} > "$out"
