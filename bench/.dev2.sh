source .device/env.sh
V=.device/bin/vdit
R=$OUT/r; mkdir -p $R
$V selftest --kernel attention > $R/selftest_att.txt 2>&1
$V --kernels flash=coop-1pass bench attention --mode softmax --tokens 32760 --iters 5 > $R/att_1pass.txt 2>&1
$V --kernels flash=coop-1pass bench attention --mode hybrid --rate 2 --tokens 32760 --iters 5 > $R/atth_1pass.txt 2>&1
tar czf $OUT/r.tgz -C $OUT r
