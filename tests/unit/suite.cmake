# bench/suite (the benchmark suite, scripts/bench.sh): output parsers on captured tool
# output, report statistics and files, the meshd Service YAML, and connrate end to end on
# 127.0.0.1. Python (Debian's /usr/bin/python3 with python3-matplotlib); no root needed.
add_test(NAME bench_suite
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/bench/suite/suite_test.py
                 $<TARGET_FILE:connrate>)
set_tests_properties(bench_suite PROPERTIES LABELS unit TIMEOUT 120)
