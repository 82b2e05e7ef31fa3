"""Large phone JPEGs (issue 20): four 40 MP photos become the job's working size without ever
being decoded at full size (PIL draft: DCT-domain reduction), well under 2 GB of memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

# Runs in a fresh interpreter so that the peak resident memory is this load's alone.
_PROBE = """
import json, sys
from pathlib import Path
import torch  # imported before the baseline: what the load itself costs is the difference
from vision3d.recon.views import prepare_views

def hwm_kb():  # this process's peak resident memory (VmHWM belongs to the address space, so an exec
    # starts it afresh, unlike ru_maxrss, which keeps the forking parent's peak: a big pytest process)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

base = hwm_kb()
vf = prepare_views(sys.argv[1], Path(sys.argv[2]), max_side=512)
peak = hwm_kb()
print(json.dumps({"base_kb": base, "peak_kb": peak, "sizes": vf.sizes, "size": [vf.width, vf.height],
                  "exif": vf.cameras_exif}))
"""


def test_four_40mp_jpegs_load_under_the_memory_bound(tmp_path):
    W, H = 7296, 5472  # 40 MP, 4:3, stored landscape; the EXIF turns it to portrait (orientation 6)
    rng = np.random.default_rng(0)
    im = Image.fromarray((rng.random((H // 64, W // 64, 3)) * 255).astype(np.uint8)).resize((W, H), Image.BILINEAR)
    ex = Image.Exif()
    ex[0x0112] = 6
    ex[0x010F], ex[0x0110] = "Apple", "iPhone 12"
    ex.get_ifd(0x8769)[0xA405] = 26
    photos = tmp_path / "photos"
    photos.mkdir()
    im.save(photos / "p0.jpg", quality=90, exif=ex)
    del im
    for i in (1, 2, 3):
        shutil.copy(photos / "p0.jpg", photos / f"p{i}.jpg")
    out = subprocess.run([sys.executable, "-c", _PROBE, str(photos), str(tmp_path / "views")], capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    peak_mb, grew_mb = r["peak_kb"] / 1024, (r["peak_kb"] - r["base_kb"]) / 1024
    assert peak_mb < 2048, f"peak RSS {peak_mb:.0f} MB"
    # one 40 MP photo decoded at full size is 120 MB of bytes and 480 MB as float32: far less is used
    assert grew_mb < 300, f"loading grew RSS by {grew_mb:.0f} MB"
    assert r["size"] == [384, 512] and r["sizes"] is None  # upright portrait at the working size
    assert all(e["source"] == "exif_35mm" and e["camera"] == "Apple iPhone 12" for e in r["exif"])
