# Reads `gotestsum tool slowest` lines ("PACKAGE TEST DURATION", the
# duration as Go prints it: 1m42.19s, 20.39s, 850ms) and prints
# "SECONDS JOB TEST", JOB given with -v job=NAME.
function seconds(d,    s, n) {
  s = 0
  if (d ~ /ms$/) { sub(/ms$/, "", d); return d / 1000 }
  if (d ~ /h/) { n = d; sub(/h.*/, "", n); s += n * 3600; sub(/^[^h]*h/, "", d) }
  if (d ~ /m/) { n = d; sub(/m.*/, "", n); s += n * 60; sub(/^[^m]*m/, "", d) }
  sub(/s$/, "", d)
  return s + d
}
{ printf "%.2f %s %s\n", seconds($3), job, $2 }
