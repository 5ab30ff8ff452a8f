"""SuperResMoE scripted module for 3D Slicer: the Enhance panel.

A thin shell over :mod:`SuperResMoELib` (DESIGN section 8):

* ``SuperResMoE`` - module metadata; registers the sample data.
* ``SuperResMoEWidget`` - loads ``Resources/UI/SuperResMoE.ui``, binds it to the
  typed parameter node (:class:`SuperResMoELib.slicer.parameters.PanelParameters`),
  runs Enhance in the background (Enhance turns into Cancel) and shows results.
* ``SuperResMoELogic`` - MRML <-> library: dependencies, a blocking
  ``process`` for scripts and tests, the comparison layout.
* ``SuperResMoETest`` - runs inside Slicer (Developer mode, Reload and Test).

The work itself (temporary files, the background ``superresmoe`` process, its
JSON progress, loading results as new nodes) is
:class:`SuperResMoELib.slicer.logic.EnhanceRun`, tested outside Slicer.
"""

from __future__ import annotations

import logging
import os
import sys

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:  # Slicer's translation functions (user-facing strings are ready for translation)
    from slicer.i18n import tr as _
    from slicer.i18n import translate

    def _category(name):
        """A module category, translated in Slicer's own context (so menus do not split)."""
        return translate("qSlicerAbstractCoreModule", name)
except ImportError:  # an old Slicer: shown as written
    def _(text):
        return text

    def _category(name):
        return name

_HERE = os.path.dirname(os.path.abspath(__file__))
for _candidate in (_HERE, os.path.dirname(_HERE)):  # installed beside, or the source tree
    if os.path.isdir(os.path.join(_candidate, "SuperResMoELib")) and _candidate not in sys.path:
        # appended, not first: the source tree's training/, Testing/, docs/ must shadow nothing
        sys.path.append(_candidate)
        break

#: The oldest supported Slicer and the Python it embeds. Slicer 5.6 and 5.8 embed
#: Python 3.9, whose runtime rejects the library's ``X | Y`` type aliases.
MINIMUM_SLICER = "5.10"
MINIMUM_PYTHON = (3, 10)


def unsupported_reason(version: tuple[int, ...] = tuple(sys.version_info)) -> str | None:
    """Why this Slicer cannot run the module (its Python is older than
    :data:`MINIMUM_PYTHON`), or ``None``. Checked before any library import."""
    if tuple(version[:2]) >= MINIMUM_PYTHON:
        return None
    return (f"SuperResMoE needs 3D Slicer {MINIMUM_SLICER} or newer (Python {'.'.join(map(str, MINIMUM_PYTHON))}+); "
            f"this Slicer runs Python {'.'.join(map(str, version[:3]))}. Install Slicer {MINIMUM_SLICER} or newer "
            "from https://download.slicer.org and the SuperResMoE extension for it.")


#: Widgets the panel code uses and their classes in the .ui (checked by Testing/test_module_ui.py).
UI_WIDGETS: dict[str, str] = {
    "inputSelector": "qMRMLNodeComboBox", "referenceSelector": "qMRMLNodeComboBox", "simulateCheckBox": "QCheckBox",
    "methodComboBox": "QComboBox", "methodDescriptionLabel": "QLabel", "checkpointPathLineEdit": "ctkPathLineEdit",
    "deviceComboBox": "QComboBox", "scaleLineEdit": "QLineEdit", "expertSpinBox": "QSpinBox",
    "ssmoeGroupBox": "QGroupBox", "taskComboBox": "QComboBox", "acquisitionLineEdit": "QLineEdit",
    "acquisitionTableSelector": "qMRMLNodeComboBox", "acquisitionFilePathLineEdit": "ctkPathLineEdit",
    "outputSelector": "qMRMLNodeComboBox", "logTextEdit": "QPlainTextEdit",
    "logCollapsibleButton": "ctkCollapsibleButton",
    "remixGroupBox": "QGroupBox", "targetSpacingSpinBox": "QDoubleSpinBox", "patchSizeSpinBox": "QSpinBox",
    "moediffGroupBox": "QGroupBox", "diffusionStepsSpinBox": "QSpinBox", "diffusionSamplesSpinBox": "QSpinBox",
    "samplerModeComboBox": "QComboBox", "sliceAxisComboBox": "QComboBox",
    "batchSizeSpinBox": "QSpinBox", "overlapSliderWidget": "ctkSliderWidget", "mixedPrecisionCheckBox": "QCheckBox",
    "applyButton": "QPushButton", "progressBar": "QProgressBar", "statusLabel": "QLabel",
    "resultsTextBrowser": "QTextBrowser", "layoutButton": "QPushButton",
}
#: Method groups whose option boxes are shown.
METHOD_OPTION_BOXES = {"ssmoeGroupBox": ("ssmoe", "srunet", "hardmoe"), "remixGroupBox": ("remix", "remix1", "moediff"),
                       "moediffGroupBox": ("moediff",)}
#: Milliseconds between two polls of the background process.
POLL_INTERVAL_MS = 100


# ============================================================================ module
class SuperResMoE(ScriptedLoadableModule):
    """Module metadata."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SuperResMoE")
        self.parent.categories = [_category("Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["SuperResMoE developers (SuperResMoE project)"]
        self.parent.helpText = _(
            "Super-resolution of low-resolution MRI with mixture-of-experts methods (SS-MoE, REMIx, MoEDiff-SR) and a "
            "cubic-spline baseline. Pick an input volume (or a 4D scan's volume sequence) and a method, click "
            "<b>Enhance</b>; with a reference (or 'simulate low resolution') you also get error maps and metrics. "
            "See the <a href='https://github.com/SuperResMoE/SlicerSuperResMoE#readme'>user guide</a>."
        )
        self.parent.acknowledgementText = _(
            "Methods: Lin et al. (SS-MoE, MICCAI 2021); Morell-Ortega et al. (REMIx, MIDL 2024); Wang et al. "
            "(MoEDiff-SR). Sample data built from the MNI152 2009 template shipped with nilearn."
        )
        reason = unsupported_reason()
        if reason:
            logging.error(reason)
            self.parent.helpText = reason
            return
        slicer.app.connect("startupCompleted()", onStartupCompleted)


def onStartupCompleted():
    """Register the sample data and the comparison layout (so a saved scene that
    uses the layout reopens with it, before the panel is ever shown)."""
    registerSampleData()
    try:
        from SuperResMoELib.slicer.views import register_layout

        manager = slicer.app.layoutManager()
        if manager is not None:  # none with --no-main-window
            register_layout(manager.layoutLogic().GetLayoutNode())
    except Exception:  # noqa: BLE001 - a layout problem must not break Slicer's startup
        logging.exception("SuperResMoE: registering the comparison layout failed")


def registerSampleData():
    """Register the shipped compact samples with the Sample Data module: an LR/HR
    T1 pair and a MUDI-like 4D qMRI scan (LR and HR volume sequences and the
    acquisition table). Plain file sources (:mod:`SuperResMoELib.slicer.samples`),
    so ``SampleData.downloadSample(name)`` loads them too."""
    try:
        import SampleData
    except ImportError:  # Sample Data module disabled
        return
    from SuperResMoELib.slicer.samples import sample_sources

    icon = os.path.join(_HERE, "Resources", "Icons", "SuperResMoE.png")
    try:
        sources = sample_sources(os.path.join(_HERE, "Resources", "SampleData"), icon)
    except (OSError, ValueError, KeyError) as exc:
        logging.error("SuperResMoE sample data unavailable: %s", exc)
        return
    for source in sources:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


# ============================================================================ widget
class SuperResMoEWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The Enhance panel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._params = None
        self._updating = False
        self._run = None
        self._timer = None
        self._deviceTimer = None
        self._last = None

    # ----------------------------------------------------------- setup
    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        reason = unsupported_reason()
        if reason:  # a message instead of a panel that would fail at the first library import
            label = qt.QLabel(reason)
            label.setWordWrap(True)
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SuperResMoE.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SuperResMoELogic()
        self._populate()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

        for name in ("inputSelector", "referenceSelector", "acquisitionTableSelector", "outputSelector"):
            getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for name in ("methodComboBox", "deviceComboBox", "taskComboBox", "samplerModeComboBox", "sliceAxisComboBox"):
            getattr(self.ui, name).connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        for name in ("simulateCheckBox", "mixedPrecisionCheckBox"):
            getattr(self.ui, name).connect("toggled(bool)", self.updateParameterNodeFromGUI)
        for name in ("scaleLineEdit", "acquisitionLineEdit"):
            getattr(self.ui, name).connect("editingFinished()", self.updateParameterNodeFromGUI)
        for name in ("expertSpinBox", "patchSizeSpinBox", "batchSizeSpinBox", "targetSpacingSpinBox",
                     "diffusionStepsSpinBox", "diffusionSamplesSpinBox"):
            getattr(self.ui, name).connect("valueChanged(double)" if name == "targetSpacingSpinBox"
                                           else "valueChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.overlapSliderWidget.connect("valueChanged(double)", self.updateParameterNodeFromGUI)
        self.ui.checkpointPathLineEdit.connect("currentPathChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.acquisitionFilePathLineEdit.connect("currentPathChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.layoutButton.connect("clicked(bool)", self.onShowLayout)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _populate(self):
        from SuperResMoELib.methods import get_method_class, method_names

        self.ui.methodComboBox.clear()
        for name in method_names():
            try:
                cls = get_method_class(name)
            except Exception as exc:  # noqa: BLE001 - a broken optional method must not break the panel
                logging.warning("method %s unavailable: %s", name, exc)
                continue
            self.ui.methodComboBox.addItem(cls.title or name, name)
        self.ui.taskComboBox.clear()
        self.ui.taskComboBox.addItem("method default", "")
        for task in ("aniso", "iso"):
            self.ui.taskComboBox.addItem(task, task)
        self._fillDevices(None)
        self._probeDevices()

    def _probeDevices(self):
        """List the devices in a child process (torch stays out of the GUI); filled in when it answers."""
        import qt

        self.logic.probeDevices()
        if self._deviceTimer is None:
            self._deviceTimer = qt.QTimer()
            self._deviceTimer.setInterval(200)
            self._deviceTimer.connect("timeout()", self._pollDevices)
        self._deviceTimer.start()

    def _pollDevices(self):
        devices = self.logic.devices()
        if devices is None:
            return
        self._deviceTimer.stop()
        self._fillDevices(devices)
        if devices.warning and self._run is None:
            self.ui.statusLabel.text = devices.warning

    def _fillDevices(self, devices):
        """The device list: auto, then the probe's devices (the CPU alone until it answers)."""
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)
        try:
            combo.clear()
            combo.addItem("auto", "auto")
            for name, label in (devices.choices() if devices is not None else [("cpu", "cpu")]):
                combo.addItem(label, name)
        finally:
            combo.blockSignals(wasBlocked)
        if self._params is not None:
            self.updateGUIFromParameterNode()

    # --------------------------------------------------- parameter node
    def cleanup(self):
        for timer in (self._timer, self._deviceTimer):
            if timer is not None:
                timer.stop()
        self.removeObservers()
        if self._run is not None:
            self._run.cancel()

    def enter(self):
        if self.logic is None:  # no panel (an unsupported Slicer)
            return
        self.initializeParameterNode()

    def exit(self):
        import vtk

        if self._params is not None:
            self.removeObserver(self._params.node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        """The scene closes: a running Enhance is cancelled (its results would land in
        the next scene) and the old parameter node's observer goes."""
        import vtk

        if self._run is not None:
            self._run.cancel(discard=True)  # non-blocking; nothing is loaded, even if it had just finished
            self.ui.statusLabel.text = _("Cancelled: the scene was closed.")
        if self._params is not None:
            self.removeObserver(self._params.node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._params = None
        self._last = None
        if self.logic is not None:
            self.ui.layoutButton.enabled = False

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        import vtk

        from SuperResMoELib.slicer.parameters import PanelParameters

        node = self.logic.getParameterNode()
        if self._params is not None and self._params.node is not node:
            self.removeObserver(self._params.node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._params = PanelParameters(node)
        if self._params.inputVolume is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None:
                self._params.inputVolume = first
        if not self.hasObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode):
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._params is None or self._updating:
            return
        self._updating = True
        try:
            p, ui = self._params, self.ui
            ui.inputSelector.setCurrentNode(p.inputVolume)
            ui.referenceSelector.setCurrentNode(p.referenceVolume)
            ui.simulateCheckBox.checked = p.simulate
            ui.methodComboBox.setCurrentIndex(max(0, ui.methodComboBox.findData(p.method)))
            ui.taskComboBox.setCurrentIndex(max(0, ui.taskComboBox.findData(p.task)))
            ui.deviceComboBox.setCurrentIndex(max(0, ui.deviceComboBox.findData(p.device)))
            ui.checkpointPathLineEdit.currentPath = p.checkpoint
            ui.scaleLineEdit.text = p.scale
            ui.acquisitionLineEdit.text = p.acquisition
            ui.acquisitionTableSelector.setCurrentNode(p.acquisitionTable)
            ui.outputSelector.setCurrentNode(p.targetVolume)
            ui.acquisitionFilePathLineEdit.currentPath = p.acquisitionFile
            ui.expertSpinBox.value = p.expert
            ui.targetSpacingSpinBox.value = p.targetSpacing
            ui.patchSizeSpinBox.value = p.patchSize
            ui.batchSizeSpinBox.value = p.batchSize
            ui.overlapSliderWidget.value = p.overlap
            ui.mixedPrecisionCheckBox.checked = p.mixedPrecision
            ui.diffusionStepsSpinBox.value = p.diffusionSteps
            ui.diffusionSamplesSpinBox.value = p.diffusionSamples
            ui.samplerModeComboBox.setCurrentIndex(max(0, ui.samplerModeComboBox.findText(p.samplerMode)))
            ui.sliceAxisComboBox.setCurrentIndex(max(0, ui.sliceAxisComboBox.findText(p.sliceAxis)))
            self._updateMethodWidgets(p.method)
            running = self._run is not None
            ui.applyButton.text = "Cancel" if running else "Enhance"
            ui.applyButton.enabled = running or p.inputVolume is not None
            ui.applyButton.toolTip = ("Stop the running Enhance" if running else
                                      "Run the method in the background" if p.inputVolume is not None
                                      else "Select an input volume first")
        finally:
            self._updating = False

    def _updateMethodWidgets(self, method):
        from SuperResMoELib.methods import get_method_class

        for box, methods in METHOD_OPTION_BOXES.items():
            getattr(self.ui, box).visible = method in methods
        try:
            cls = get_method_class(method)
            self.ui.methodDescriptionLabel.text = cls.description
            self.ui.expertSpinBox.enabled = method in ("ssmoe", "hardmoe", "remix", "moediff")
        except Exception as exc:  # noqa: BLE001
            self.ui.methodDescriptionLabel.text = f"unavailable: {exc}"

    def updateParameterNodeFromGUI(self, *args):
        if self._params is None or self._updating:
            return
        p, ui = self._params, self.ui
        wasModifying = p.node.StartModify()
        try:
            p.inputVolume = ui.inputSelector.currentNode()
            p.referenceVolume = ui.referenceSelector.currentNode()
            p.simulate = bool(ui.simulateCheckBox.checked)
            p.method = ui.methodComboBox.currentData or "cubic"
            p.task = ui.taskComboBox.currentData or ""
            p.device = ui.deviceComboBox.currentData or "auto"
            p.checkpoint = ui.checkpointPathLineEdit.currentPath
            p.scale = ui.scaleLineEdit.text
            p.acquisition = ui.acquisitionLineEdit.text
            p.acquisitionTable = ui.acquisitionTableSelector.currentNode()
            p.targetVolume = ui.outputSelector.currentNode()
            p.acquisitionFile = ui.acquisitionFilePathLineEdit.currentPath
            p.expert = int(ui.expertSpinBox.value)
            p.targetSpacing = float(ui.targetSpacingSpinBox.value)
            p.patchSize = int(ui.patchSizeSpinBox.value)
            p.batchSize = int(ui.batchSizeSpinBox.value)
            p.overlap = float(ui.overlapSliderWidget.value)
            p.mixedPrecision = bool(ui.mixedPrecisionCheckBox.checked)
            p.diffusionSteps = int(ui.diffusionStepsSpinBox.value)
            p.diffusionSamples = int(ui.diffusionSamplesSpinBox.value)
            # the first entry (full, auto) is the method's default: stored as unset
            p.samplerMode = ui.samplerModeComboBox.currentText if ui.samplerModeComboBox.currentIndex > 0 else ""
            p.sliceAxis = ui.sliceAxisComboBox.currentText if ui.sliceAxisComboBox.currentIndex > 0 else ""
        finally:
            p.node.EndModify(wasModifying)

    # ---------------------------------------------------------- enhance
    def onApplyButton(self):
        if self._run is not None:
            self.ui.statusLabel.text = _("Cancelling...")
            self._run.cancel()
            return
        from SuperResMoELib.slicer.logic import EnhanceRun

        if not self.logic.ensureDependencies(confirm=True):
            self.ui.statusLabel.text = _("Missing Python packages: Enhance needs them (see the user guide).")
            return
        if self.logic.devices() is None and self._deviceTimer is not None:
            self._deviceTimer.start()  # a new probe (after installing torch): fill the list when it answers
        p = self._params
        try:
            request = p.to_request()
            if request.device.startswith("cuda"):
                warning = self.logic.smallGPUWarning(request.device)  # from the probe: no torch here
                if warning:
                    slicer.util.warningDisplay(warning, windowTitle="SuperResMoE")
            self._run = EnhanceRun(slicer.mrmlScene, p.inputVolume, request,
                                   None if request.simulate else p.referenceVolume,
                                   on_progress=self._onProgress, acquisition=p.acquisition_source(),
                                   on_log=self._onLog, output_node=p.targetVolume)
            self._run.start()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self._run = None
            slicer.util.errorDisplay(_("Enhance could not start: {error}").format(error=exc), windowTitle="SuperResMoE")
            return
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self.ui.resultsTextBrowser.clear()
        self.ui.logTextEdit.clear()
        self._timer.start()
        self.updateGUIFromParameterNode()

    def _onLog(self, line):
        """A line of the background process into the log panel."""
        self.ui.logTextEdit.appendPlainText(line)

    def _onProgress(self, stage, fraction, message):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressBar.format = f"{stage}: %p%"
        self.ui.statusLabel.text = message

    def _poll(self):
        from SuperResMoELib.slicer.logic import EnhanceCancelled, EnhanceFailed

        run = self._run
        try:
            if run.poll():
                return
            self._showOutcome(run.outcome, run.input_node, run.reference_node)
        except EnhanceCancelled:
            self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        except EnhanceFailed as exc:
            self.ui.statusLabel.text = _("Enhance failed (details in the dialog and the log).")
            self.ui.logCollapsibleButton.collapsed = False
            slicer.util.errorDisplay(_("Enhance failed."), detailedText=str(exc), windowTitle="SuperResMoE")
        except Exception as exc:  # noqa: BLE001 - loading or showing the results: tell the user
            logging.exception("SuperResMoE: showing the results failed")
            self.ui.statusLabel.text = _("Showing the results failed: {error}").format(error=exc)
            slicer.util.errorDisplay(_("Enhance finished, but showing its results failed."), detailedText=str(exc),
                                     windowTitle="SuperResMoE")
        finally:
            if not (run.process is not None and run.process.running):
                self._timer.stop()
                self._run = None
                self.ui.progressBar.visible = False
                self.updateGUIFromParameterNode()

    def _showOutcome(self, outcome, inputNode, referenceNode):
        """Results of the run that started with ``inputNode`` / ``referenceNode`` (not
        whatever the selectors show now)."""
        p = self._params
        self._last = (outcome, inputNode, referenceNode)
        if p is None:  # the scene closed meanwhile
            return
        p.outputVolume = outcome.nodes.get("sr")
        p.errorVolume = outcome.nodes.get("abserr")
        p.expertVolume = outcome.nodes.get("routing")
        p.lowResolutionVolume = outcome.nodes.get("lr")
        p.metricsTable = outcome.nodes.get("metrics")
        self.ui.resultsTextBrowser.setHtml(self.logic.resultsHtml(outcome))
        self.ui.layoutButton.enabled = True
        self.onShowLayout()

    def onShowLayout(self):
        if self._last is None:
            return
        outcome, inputNode, referenceNode = self._last
        try:
            with slicer.util.WaitCursor():
                self.logic.showComparison(outcome, inputNode, referenceNode)
        except Exception as exc:  # noqa: BLE001 - one dialog; the results themselves are in the scene
            logging.exception("SuperResMoE: showing the comparison layout failed")
            self.ui.statusLabel.text = _("Showing the comparison layout failed: {error}").format(error=exc)
            slicer.util.errorDisplay(_("Showing the comparison layout failed."), detailedText=str(exc),
                                     windowTitle="SuperResMoE")


# ============================================================================ logic
class SuperResMoELogic(ScriptedLoadableModuleLogic):
    """MRML <-> library (no GUI code)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    # ------------------------------------------------------ dependencies
    def ensureDependencies(self, confirm=True):
        """What Enhance needs, with one confirmation (:mod:`SuperResMoELib.slicer.dependencies`):
        torch at least ``TORCH_REQUIREMENT`` through the PyTorch extension, the other
        packages with pip at their version floors, Slicer's numpy, scipy, SimpleITK
        and VTK pinned by a constraints file (never upgraded); ``slicer.packaging.pip_ensure``
        where this Slicer has it; a restart prompt when an upgraded package was imported
        already. Returns whether everything is usable now."""
        from SuperResMoELib.slicer import dependencies

        plan = dependencies.install_plan()
        if plan.empty:
            return True
        if confirm and not slicer.util.confirmOkCancelDisplay(plan.message, windowTitle="SuperResMoE"):
            return False
        if plan.torch and not self._installTorch(dependencies):
            return False
        if plan.pip and not self._pipInstall(dependencies, list(plan.pip)):
            return False
        return dependencies.install_plan().empty

    def _installTorch(self, dependencies):
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(_("SuperResMoE needs PyTorch: install the 'PyTorch' extension from the "
                                       "Extensions Manager, restart Slicer and try again."), windowTitle="SuperResMoE")
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        try:
            if dependencies.is_installed(dependencies.TORCH) and hasattr(torchLogic, "uninstallTorch"):
                torchLogic.uninstallTorch()  # an installed torch below the floor
            installed = torchLogic.installTorch(askConfirmation=False,
                                                torchVersionRequirement=dependencies.TORCH_REQUIREMENT[len("torch"):])
        except TypeError:  # an older PyTorch extension without version requirements
            installed = torchLogic.installTorch(askConfirmation=False)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            logging.exception("SuperResMoE: installing PyTorch failed")
            slicer.util.errorDisplay(_("Installing PyTorch failed."), detailedText=str(exc), windowTitle="SuperResMoE")
            return False
        if installed is None or not dependencies.torch_ok():
            slicer.util.errorDisplay(_("SuperResMoE needs {requirement}; the PyTorch extension did not provide it. "
                                       "Update the PyTorch extension and restart Slicer.").format(
                                         requirement=dependencies.TORCH_REQUIREMENT), windowTitle="SuperResMoE")
            return False
        slicer.util.infoDisplay(dependencies.torch_summary(), windowTitle="SuperResMoE: PyTorch")
        self.probeDevices()  # the GPUs can be listed now
        return True

    def _pipInstall(self, dependencies, requirements):
        constraints = os.path.join(slicer.util.tempDirectory("SuperResMoE-pip"), "constraints.txt")
        with open(constraints, "w", encoding="utf-8") as fh:
            fh.write(dependencies.constraints_text())
        restart = dependencies.already_imported(requirements)
        try:
            try:  # Slicer >= 5.12 (a submodule: imported explicitly)
                import slicer.packaging as packaging
            except ImportError:
                packaging = None
            if packaging is not None and hasattr(packaging, "pip_ensure"):
                # the user agreed already (or asked for the full self-test): also under --testing
                packaging.pip_ensure(requirements, constraints=constraints, prompt_install=False,
                                     prompt_restart=True, requester="SuperResMoE", skip_in_testing=False)
                restart = []  # pip_ensure asked already
            else:
                with slicer.util.WaitCursor():
                    slicer.util.pip_install(["-c", constraints, *requirements])
        except Exception as exc:  # noqa: BLE001 - pip failed: tell the user what and why
            logging.exception("SuperResMoE: installing %s failed", requirements)
            slicer.util.errorDisplay(_("Installing the Python packages SuperResMoE needs failed:") + "\n"
                                     + "\n".join(requirements), detailedText=str(exc), windowTitle="SuperResMoE")
            return False
        if restart and slicer.util.confirmYesNoDisplay(
                _("These packages were upgraded while an older version was loaded: {packages}. Restart Slicer now "
                  "so that the new versions are used?").format(packages=", ".join(restart)),
                windowTitle="SuperResMoE"):
            slicer.util.restart()
        return True

    def probeDevices(self):
        """(Re)start listing the devices in a child process (:mod:`SuperResMoELib.slicer.device_probe`)."""
        from SuperResMoELib.slicer.device_probe import DeviceProbe

        self._probe = DeviceProbe().start()

    def devices(self):
        """The probe's :class:`~SuperResMoELib.slicer.device_probe.DeviceList`, ``None`` while it runs."""
        probe = getattr(self, "_probe", None)
        return None if probe is None else probe.result()

    def smallGPUWarning(self, device):
        """A warning when ``device`` has little memory (from the probe's list), else ``None``."""
        devices = self.devices()
        d = devices.get(device) if devices is not None else None
        if d is not None and d.small:
            return (f"{d.label} has little memory: reduce the batch or patch size if it runs out of memory "
                    "(SuperResMoE retries with smaller batches, then the CPU).")
        return None

    def process(self, inputVolume, method="cubic", referenceVolume=None, waitForCompletion=True,
                acquisition=None, **options):
        """Enhance ``inputVolume`` (a volume, or a 4D scan's volume sequence with an
        ``acquisition`` table node or file) with ``method`` (options as
        :class:`SuperResMoELib.slicer.logic.EnhanceRequest` fields).  With
        ``waitForCompletion`` it blocks and returns the outcome (new nodes,
        metrics, info); otherwise it returns the started run to poll."""
        from SuperResMoELib.slicer.logic import EnhanceRun, request_from_dict

        request = request_from_dict({"method": method, **options})
        run = EnhanceRun(slicer.mrmlScene, inputVolume, request, referenceVolume,
                         on_progress=lambda s, f, m: logging.info("%s %3.0f%% %s", s, 100 * f, m),
                         acquisition=acquisition)
        if not waitForCompletion:
            run.start()
            return run
        return run.run(wait=True)

    def resultsHtml(self, outcome):
        """The results box: what ran where, the method's reason, warnings, events, metrics."""
        from SuperResMoELib.slicer.logic import results_html

        return results_html(outcome)

    def showComparison(self, outcome, inputVolume, referenceVolume=None):
        """Switch to the LR | SR | HR layout and fill it."""
        from SuperResMoELib.slicer.views import (
            LAYOUT_ID,
            VIEW_TAGS,
            add_color_legend,
            comparison_contents,
            fill_views,
        )
        from SuperResMoELib.slicer.views import register_layout

        from SuperResMoELib.slicer.sequences import display_volume

        nodes = outcome.nodes
        inputVolume, referenceVolume = display_volume(inputVolume), display_volume(referenceVolume)
        lr = nodes.get("lr") or inputVolume
        hr = inputVolume if "lr" in nodes else referenceVolume
        layoutManager = slicer.app.layoutManager()
        register_layout(layoutManager.layoutLogic().GetLayoutNode())
        layoutManager.setLayout(LAYOUT_ID)
        fill_views(slicer.mrmlScene, comparison_contents(nodes["sr"], lr, hr, nodes.get("abserr"),
                                                         nodes.get("routing")))
        if nodes.get("abserr") is not None:
            add_color_legend(nodes["abserr"], "abs. error")
        for tag in VIEW_TAGS:
            widget = layoutManager.sliceWidget(tag)
            if widget is not None:
                widget.sliceLogic().FitSliceToAll()


# ============================================================================ test
class SuperResMoETest(ScriptedLoadableModuleTest):
    """Slicer's *Reload and Test*. By default the light test
    (:func:`SuperResMoELib.slicer.selftest.light_self_test`: no torch, nothing
    installed, so it runs on extension build machines); with
    ``SUPERRESMOE_FULL_SELF_TEST=1`` also real Enhance runs on the shipped
    samples (:func:`~SuperResMoELib.slicer.selftest.full_self_test`), polled
    while Slicer keeps processing events."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from SuperResMoELib.slicer.selftest import full_test_requested

        self.setUp()
        self.test_light()
        if full_test_requested():
            self.setUp()
            self.test_full()

    def _resources(self):
        return os.path.join(_HERE, "Resources", "SampleData")

    def test_light(self):
        from SuperResMoELib.slicer.selftest import light_self_test

        self.delayDisplay("SuperResMoE light self-test: library, samples, parameter node, sequences, layout")
        found = light_self_test(slicer.mrmlScene, self._resources())
        self.delayDisplay(f"Light self-test passed: {found}")

    def test_full(self):
        from SuperResMoELib.slicer.selftest import full_self_test

        if not SuperResMoELogic().ensureDependencies(confirm=False):
            self.fail("the packages Enhance needs could not be installed")
        self.delayDisplay("SuperResMoE full self-test: Enhance on the shipped samples")
        found = full_self_test(slicer.mrmlScene, self._resources(), wait=lambda: slicer.app.processEvents())
        self.delayDisplay(f"Full self-test passed: {found}")
