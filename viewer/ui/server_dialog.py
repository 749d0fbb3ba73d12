"""PACS servers: add, edit, remove and test them (File ▸ Remote ▸ Servers…).

The list lives in ``viewer.remote.servers.ServerStore`` (no secrets); a password or token goes to
the OS keyring through ``set_secret``, and when there is none the dialog says it is kept for this
session only. "Test" sends an echo on a worker and shows OK or the server's one-line reason.
Turning TLS verification off asks first: it is on by default and per server.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..remote import servers as store_mod
from ..remote.base import Server, valid_ae
from .workers import TaskRunner, Worker

KINDS = (("dicomweb", "DICOMweb (QIDO/WADO/STOW-RS)"), ("dimse", "DIMSE (C-FIND/C-GET/C-MOVE/C-STORE)"))
AUTHS = (("none", "None"), ("basic", "Basic (user + password)"), ("bearer", "Bearer token"))
RETRIEVES = (("get", "C-GET"), ("move", "C-MOVE to our storage SCP"))
TLS_OFF_TEXT = ("Turn off TLS certificate verification for this server?\n\nAnyone between you and the "
                "server could then read and change the images and your password. Prefer adding the "
                "hospital's CA bundle instead.")


def ask_yes_no(parent, title: str, text: str) -> bool:
    """A Yes/No question (replaced in tests, which cannot click a modal box)."""
    answer = QMessageBox.question(parent, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def _combo(items) -> QComboBox:
    box = QComboBox()
    for value, text in items:
        box.addItem(text, value)
    return box


def _set_combo(box: QComboBox, value: str) -> None:
    i = box.findData(value)
    box.setCurrentIndex(max(i, 0))



def fill_server_combo(combo, store, select: str | None = None, on_error=None) -> list[str]:
    """List the configured servers' names in ``combo``, keeping ``select`` (or the current one) chosen;
    a broken settings file goes to ``on_error(message)`` and the list is empty."""
    current = select or combo.currentText()
    try:
        names = [s.name for s in store.load()]
    except ValueError as exc:
        names = []
        if on_error is not None:
            on_error(str(exc))
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    return names

class ServerDialog(QDialog):
    """Edit the server list. ``servers_changed`` fires after every save or removal."""

    servers_changed = Signal()
    test_done = Signal(bool, str)  # ok, the line shown

    def __init__(self, parent: QWidget | None = None, store: store_mod.ServerStore | None = None):
        super().__init__(parent)
        self.setWindowTitle("PACS servers")
        self.store = store or store_mod.ServerStore()
        self.runner = TaskRunner(self)
        self._test: Worker | None = None
        self._editing: str | None = None  # the name of the server shown in the form (None = a new one)
        self.confirm = ask_yes_no  # tests replace it

        self.list = QListWidget()
        self.list.currentTextChanged.connect(self._chosen)
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(self.new_server)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove_current)
        left = QVBoxLayout()
        left.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        left.addLayout(row)

        self.name = QLineEdit()
        self.kind = _combo(KINDS)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.url = QLineEdit()
        self.url.setPlaceholderText("https://pacs.example.org/dicom-web")
        self.host = QLineEdit()
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(104)
        self.called_ae = QLineEdit()
        self.called_ae.setMaxLength(16)
        self.calling_ae = QLineEdit("LIGHTBOX")
        self.calling_ae.setMaxLength(16)
        self.retrieve = _combo(RETRIEVES)
        self.move_port = QSpinBox()
        self.move_port.setRange(0, 65535)
        self.move_port.setSpecialValueText("any free port")
        self.retrieve.currentIndexChanged.connect(
            lambda _i: self.move_port.setEnabled(self.retrieve.currentData() == "move"))
        self.move_port.setEnabled(False)
        tip = ("C-MOVE: the PACS sends the images to us, so it must know our AE title, this computer's address "
               "and this port (ask its administrator to add them); C-GET needs none of that")
        self.retrieve.setToolTip(tip)
        self.move_port.setToolTip(tip)

        web = QWidget()
        web_form = QFormLayout(web)
        web_form.addRow("URL", self.url)
        dimse = QWidget()
        dimse_form = QFormLayout(dimse)
        dimse_form.addRow("Host", self.host)
        dimse_form.addRow("Port", self.port)
        dimse_form.addRow("Called AE (server)", self.called_ae)
        dimse_form.addRow("Calling AE (ours)", self.calling_ae)
        dimse_form.addRow("Retrieve with", self.retrieve)
        dimse_form.addRow("Our C-MOVE port", self.move_port)
        self.address = QStackedWidget()
        self.address.addWidget(web)
        self.address.addWidget(dimse)

        self.auth = _combo(AUTHS)
        self.auth.currentIndexChanged.connect(self._auth_changed)
        self.username = QLineEdit()
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret_note = QLabel()
        self.secret_note.setWordWrap(True)
        self.verify_tls = QCheckBox("Verify TLS certificates")
        self.verify_tls.setChecked(True)
        self.verify_tls.toggled.connect(self._tls_toggled)
        self.ca_bundle = QLineEdit()
        self.ca_bundle.setPlaceholderText("PEM file of extra trusted CAs (optional)")
        browse = QPushButton("…")
        browse.setMaximumWidth(30)
        browse.clicked.connect(self._browse_ca)
        ca_row = QHBoxLayout()
        ca_row.addWidget(self.ca_bundle, 1)
        ca_row.addWidget(browse)
        self.timeout = QSpinBox()
        self.timeout.setRange(1, 3600)
        self.timeout.setValue(30)
        self.timeout.setSuffix(" s")

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Protocol", self.kind)
        form.addRow(self.address)
        form.addRow("Authentication", self.auth)
        form.addRow("User", self.username)
        self.secret_label = QLabel("Password")
        form.addRow(self.secret_label, self.secret)
        form.addRow("", self.secret_note)
        form.addRow("", self.verify_tls)
        form.addRow("CA bundle", ca_row)
        form.addRow("Timeout", self.timeout)

        self.status = QLabel(" ")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setWordWrap(True)
        self.test_button = QPushButton("Test")
        self.test_button.setToolTip("Ask the server to answer (C-ECHO, or a one-study QIDO query)")
        self.test_button.clicked.connect(self.test)
        self.save_button = QPushButton("Save")
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(self.save)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.test_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        buttons.addWidget(close)

        right = QVBoxLayout()
        right.addLayout(form)
        right.addWidget(self.status)
        right.addStretch(1)
        right.addLayout(buttons)
        top = QHBoxLayout(self)
        top.addLayout(left, 1)
        top.addLayout(right, 2)
        self.resize(760, 480)
        self.reload()
        self._auth_changed()

    # -- the list ---------------------------------------------------------------------------------
    def reload(self, select: str | None = None) -> None:
        try:
            names = [s.name for s in self.store.load()]
        except ValueError as exc:
            names = []
            self.show_status(str(exc), error=True)
        self.list.blockSignals(True)
        self.list.clear()
        self.list.addItems(names)
        self.list.blockSignals(False)
        target = select if select in names else (names[0] if names else None)
        if target is None:
            self.new_server()
        else:
            self.list.setCurrentRow(names.index(target))
            self._chosen(target)

    def _chosen(self, name: str) -> None:
        server = self.store.get(name) if name else None
        if server is not None:
            self.show_server(server)

    def new_server(self) -> None:
        self.list.clearSelection()
        self._editing = None
        self.show_server(Server(name="", kind="dicomweb"))
        self.name.setFocus()

    def show_server(self, server: Server) -> None:
        """Fill the form with ``server`` (the secret field stays empty: typing replaces the stored one)."""
        self._editing = server.name or None
        self.name.setText(server.name)
        _set_combo(self.kind, server.kind)
        self.url.setText(server.url)
        self.host.setText(server.host)
        self.port.setValue(server.port)
        self.called_ae.setText(server.called_ae)
        self.calling_ae.setText(server.calling_ae)
        _set_combo(self.retrieve, server.retrieve)
        self.move_port.setValue(server.move_port)
        _set_combo(self.auth, server.auth)
        self.username.setText(server.username)
        self.secret.clear()
        stored = bool(server.name) and server.auth != "none" and bool(store_mod.get_secret(server))
        self.secret.setPlaceholderText("(stored — type to replace)" if stored else "")
        self.verify_tls.blockSignals(True)
        self.verify_tls.setChecked(server.verify_tls)
        self.verify_tls.blockSignals(False)
        self.ca_bundle.setText(server.ca_bundle)
        self.timeout.setValue(int(round(server.timeout)))
        self._kind_changed()
        self._auth_changed()
        self.show_status(" ")

    # -- form -------------------------------------------------------------------------------------
    def _kind_changed(self, *_args) -> None:
        web = self.kind.currentData() == "dicomweb"
        self.address.setCurrentIndex(0 if web else 1)
        for w in (self.verify_tls, self.ca_bundle):
            w.setEnabled(web)

    def _auth_changed(self, *_args) -> None:
        auth = self.auth.currentData()
        self.username.setEnabled(auth == "basic")
        self.secret.setEnabled(auth != "none")
        self.secret_label.setText("Token" if auth == "bearer" else "Password")
        if auth == "none":
            self.secret_note.setText("")
        elif store_mod.keyring_available():
            self.secret_note.setText("Kept in the OS keyring, never in the settings file.")
        else:
            self.secret_note.setText("No OS keyring here: the secret is kept for this session only.")

    def _tls_toggled(self, on: bool) -> None:
        if on:
            return
        if not self.confirm(self, "TLS verification", TLS_OFF_TEXT):
            self.verify_tls.blockSignals(True)
            self.verify_tls.setChecked(True)
            self.verify_tls.blockSignals(False)

    def _browse_ca(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA bundle", "", "PEM files (*.pem *.crt *.cer);;All files (*)")
        if path:
            self.ca_bundle.setText(path)

    def server_from_form(self) -> Server:
        """The form as a Server; ValueError with one line saying what to fix."""
        name = self.name.text().strip()
        if not name:
            raise ValueError("give the server a name")
        kind = self.kind.currentData()
        auth = self.auth.currentData()
        if kind == "dicomweb":
            url = self.url.text().strip().rstrip("/")
            if not url.lower().startswith(("http://", "https://")):
                raise ValueError("the DICOMweb URL starts with http:// or https://")
            from urllib.parse import urlsplit

            if urlsplit(url).password:
                raise ValueError("put no password in the URL: use the password field")
            server = Server(name=name, kind="dicomweb", url=url, auth=auth,
                            username=self.username.text().strip() if auth == "basic" else "",
                            verify_tls=self.verify_tls.isChecked(), ca_bundle=self.ca_bundle.text().strip(),
                            timeout=float(self.timeout.value()))
        else:
            host = self.host.text().strip()
            if not host:
                raise ValueError("give the DIMSE host")
            called, calling = self.called_ae.text().strip(), self.calling_ae.text().strip()
            for what, ae in (("called AE", called), ("calling AE", calling)):
                if not valid_ae(ae):
                    raise ValueError(f"{what} {ae!r}: an AE title is 1-16 characters, no backslash")
            server = Server(name=name, kind="dimse", host=host, port=self.port.value(), called_ae=called,
                            calling_ae=calling, retrieve=self.retrieve.currentData(),
                            move_port=self.move_port.value(), auth="none", timeout=float(self.timeout.value()))
        return server

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet("color: #c0392b;" if error else "")
        self.status.setText(text)

    # -- save / remove ----------------------------------------------------------------------------
    def save(self) -> Server | None:
        """Store the form's server (and its secret, when one was typed); None with a message when
        the form is not valid."""
        try:
            server = self.server_from_form()
        except ValueError as exc:
            self.show_status(str(exc), error=True)
            return None
        try:
            names = [s.name for s in self.store.load()]
            if server.name != self._editing and server.name in names:
                raise ValueError(f"a server called {server.name!r} exists already")
            old = self.store.get(self._editing) if self._editing else None
            self.store.put(server)
            if old is not None and old.name != server.name:
                self.store.remove(old.name)
        except (OSError, ValueError) as exc:
            self.show_status(f"not saved: {exc}", error=True)
            return None
        secret = self.secret.text()
        note = ""
        if server.auth != "none":
            if secret:
                kept = store_mod.set_secret(server, secret)
                note = " (secret in the OS keyring)" if kept else \
                    " (no OS keyring here: the secret is kept for this session only)"
            elif old is not None and (old.name, old.username) != (server.name, server.username):
                moved = store_mod.get_secret(old)
                if moved:
                    store_mod.set_secret(server, moved)
            if old is not None and (old.name, old.username) != (server.name, server.username):
                store_mod.forget_secret(old)
        self.secret.clear()
        self.reload(select=server.name)
        self.show_status(f"Saved {server.name}{note}")
        self.servers_changed.emit()
        return server

    def remove_current(self) -> None:
        item = self.list.currentItem()
        if item is None:
            return
        name = item.text()
        server = self.store.get(name)
        try:
            self.store.remove(name)
        except (OSError, ValueError) as exc:
            self.show_status(f"not removed: {exc}", error=True)
            return
        if server is not None:
            store_mod.forget_secret(server)
        self.reload()
        self.show_status(f"Removed {name}")
        self.servers_changed.emit()

    # -- test -------------------------------------------------------------------------------------
    def test(self) -> Worker | None:
        """Echo the server in the form (as typed, saved or not) on a worker; the answer lands in the status line."""
        try:
            server = self.server_from_form()
        except ValueError as exc:
            self.show_status(str(exc), error=True)
            return None
        secret = self.secret.text()
        if not secret and server.auth != "none":
            stored = self.store.get(self._editing) if self._editing else None
            if stored is not None:
                secret = store_mod.get_secret(stored if (stored.name, stored.username) ==
                                              (server.name, server.username) else server)
        if self._test is not None:
            self._test.cancel()

        def job(progress, should_stop):
            from ..remote import connect

            connect(server, secret).echo()
            return server.address

        self.show_status(f"Testing {server.address}…")
        self.test_button.setEnabled(False)
        self._test = self.runner.start(job, "test server", on_finished=self._tested,
                                       on_failed=self._test_failed, on_cancelled=lambda: self._test_over())
        return self._test

    def _test_over(self) -> None:
        self._test = None
        self.test_button.setEnabled(True)

    def _tested(self, address: str) -> None:
        self._test_over()
        self.show_status(f"OK: {address} answered")
        self.test_done.emit(True, self.status.text())

    def _test_failed(self, message: str) -> None:
        self._test_over()
        self.show_status(message.splitlines()[0] if message else "failed", error=True)
        self.test_done.emit(False, self.status.text())

    def shutdown(self) -> None:
        self.runner.shutdown()

    def closeEvent(self, ev):
        self.runner.cancel_all()
        super().closeEvent(ev)
