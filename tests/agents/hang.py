#!/usr/bin/env python3
"""Fake agent: writes its pid to argv[1] (if given), then sleeps forever printing nothing."""

import os
import sys
import time

if len(sys.argv) > 1:
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(3600)
