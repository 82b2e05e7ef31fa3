"""LiDAR 3D object detection: VoxelNet on the shared voxel / sparse-conv backend.

Modules: ``vfe`` (voxel feature encoding), ``middle`` (sparse Conv3D middle
layers), ``rpn`` (region proposal network), ``anchors`` (anchors, box coding,
target assignment), ``head`` (anchor head, losses, decoding + NMS),
``voxelnet`` (the detector and its config schema), ``registry`` (detectors by
name), ``augment`` / ``dataset`` (KITTI-format data), ``train`` (training,
checkpoints, DDP), ``infer`` / ``bev_plot`` (result files and pictures),
``stages`` (``detect_dataset``, ``detect_train``, ``detect_infer``,
``detect_eval`` for ``vision3d run``).

Kept import-light: the heavy modules load when used.
"""
