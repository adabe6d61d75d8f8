"""The frozen app's entry point: ``busi-viewer [viewer options]`` or ``busi-viewer predict [options]``."""

import sys

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "predict":
        from busi_viewer.cli.predict import main as predict

        raise SystemExit(predict(sys.argv[2:]))
    from busi_viewer.gui.app import main

    raise SystemExit(main())
