"""Starting the GUI: the window is shown before torch and diffusers are imported."""

from __future__ import annotations

import os
import sys


def make_app():
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("vaestudio")
    app.setOrganizationName("vaestudio")
    app.setDesktopFileName("vaestudio")
    return app


def run_gui(images: list[str] | None = None, vae: str | None = None) -> int:
    from PySide6.QtCore import QTimer

    from vaestudio.ui.crash import install_handlers, setup_logging
    from vaestudio.ui.main_window import MainWindow
    from vaestudio.ui.settings import use_platform_settings_dir

    app = make_app()
    use_platform_settings_dir()
    setup_logging()
    win = MainWindow()
    install_handlers(win.show_error)
    win.show()

    def initial() -> None:
        # the heavy imports start now, in workers, with the window already on screen
        if vae:
            win.session.load_vae(vae)
        if images:
            win.open_images(list(images))
        win.warm_up()

    QTimer.singleShot(0, initial)
    # used by benchmarks/bench_gui.py to time launches and the first reconstruction
    if os.environ.get("VAESTUDIO_EXIT_AFTER_SHOW"):
        QTimer.singleShot(0, lambda: (print("window shown", flush=True), app.quit()))
    if os.environ.get("VAESTUDIO_EXIT_AFTER_FIRST_PICTURE"):
        win.inspector.reconstructed.connect(lambda: (print("first picture", flush=True), app.quit()))
    if os.environ.get("VAESTUDIO_EXIT_AFTER_CLIP"):  # the first reconstructed clip frame, then the whole clip
        marks: list[str] = []

        def clip_shown(decoded: int, total: int) -> None:
            for mark in ("first clip frame",) + (("clip complete",) if decoded == total else ()):
                if mark not in marks:
                    marks.append(mark)
                    print(mark, flush=True)
            if decoded == total:
                app.quit()

        win.inspector.clip.decoded_shown.connect(clip_shown)
    code = app.exec()
    # a torch op cannot be interrupted; if one is still finishing after the window closed, do not
    # make the user wait for it (nor let Qt destroy a running thread): end the process now
    if win.runner.busy():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
